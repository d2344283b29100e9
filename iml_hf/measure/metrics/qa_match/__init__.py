"""The ``qa_match`` metric folder: ``evaluate.load`` this folder's path (see ``iml_hf.measure.qa_match``)."""
