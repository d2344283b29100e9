"""What a run computes vs where it runs: the configuration that sweep resume and the report compare."""

from __future__ import annotations

from iml_hf.config import parse_recipe
from iml_hf.config.resolved import configuration, is_placement_key


def test_machine_dependent_and_placement_keys_stay_out_of_the_compared_configuration(tiny_recipe, tmp_path):
    plain = parse_recipe([str(tiny_recipe)])
    assert "dataloader_pin_memory" not in plain.resolved["training"]  # a machine default, applied at run time
    assert plain.training_arguments(plain.stages[0]).dataloader_pin_memory is not None
    elsewhere = parse_recipe(
        [
            str(tiny_recipe),
            "--torch_threads=2",
            f"--cache_dir={tmp_path}",
            "--output_dir=x",
            "--training.report_to=tensorboard",
            "--stages.x1.dataloader_pin_memory=true",
            "--training.logging_steps=1",
        ]
    )
    assert configuration(elsewhere.resolved) == configuration(plain.resolved)
    changed = parse_recipe([str(tiny_recipe), "--stages.x1.learning_rate=0.5"])
    assert configuration(changed.resolved) != configuration(plain.resolved)
    assert is_placement_key("stages.x1.report_to") and not is_placement_key("stages.x1.learning_rate")
    assert not is_placement_key("model.num_layers") and is_placement_key("hub_model_id")


def test_toy_variants_state_only_their_differences():
    toy = configuration(parse_recipe(["recipes/toy.yaml"]).resolved)
    for recipe, differences in {
        "recipes/toy_llama.yaml": {"model.architecture": "llama"},
        "recipes/toy_attn_only.yaml": {"model.num_layers": 2, "model.attention_only": True},
    }.items():
        variant = configuration(parse_recipe([recipe]).resolved)
        assert {k: v for k, v in variant.items() if toy.get(k) != v} == differences
    paper = parse_recipe(["recipes/toy_paper.yaml"])
    assert paper.task.modulus == 120 and paper.model.num_layers == 6
    assert [paper.training_arguments(s).per_device_train_batch_size for s in paper.stages] == [512, 32, 32]
    assert [paper.training_arguments(s).weight_decay for s in paper.stages] == [0.1, 0.1, 0.1]


def test_a_run_recorded_before_loss_on_existed_trained_answer_only(tiny_recipe):
    from iml_hf.config.resolved import configuration_defaults, same_configuration

    answer = parse_recipe([str(tiny_recipe), "--model.loss_on=answer"]).resolved
    full = parse_recipe([str(tiny_recipe), "--model.loss_on=full_text"]).resolved
    old = configuration(answer)
    del old["model.loss_on"]  # results.json of a run from before the key
    defaults = configuration_defaults(answer)
    assert same_configuration(old, configuration(answer), defaults) == []
    assert same_configuration(old, configuration(full), defaults) == ["model.loss_on"]
