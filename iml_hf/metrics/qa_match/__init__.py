"""The ``qa_match`` metric folder: ``evaluate.load`` this folder's path (see ``iml_hf.qa_match``)."""
