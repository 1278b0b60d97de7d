"""The torch backend: what it loads and keeps."""





def test_step_classifier_does_not_keep_lm_head(scorers):
    names = [n for n, _ in scorers["step-classifier"].backbone.named_parameters()]
    assert names and not any("lm_head" in n or n.startswith("score") for n in names)
