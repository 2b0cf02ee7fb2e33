"""One shared battery of model tests, run for every method through a subclass that supplies a tiny config and
inputs (as transformers' ModelTesterMixin): shapes, save/load round trips, backward, determinism, remote code."""

from __future__ import annotations

import json

import torch
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification

import hf_mim  # noqa: F401  (registers the Auto classes)
from helpers import run_without_hf_mim


class MimModelTests:
    """Subclasses set `method` (a key of hf_mim.METHODS) and `tiny` (the tiny config's fields), and `masks` or
    `mask_inputs` (the inputs besides the pixels: a mask, MAE's noise, a tokenizer view)."""

    method: str
    tiny: dict

    def tiny_config(self, **overrides):
        return self.classes.config_class(**{**self.tiny, **overrides})

    def pretraining_inputs(self, config, batch_size=2, seed=0) -> dict:
        generator = torch.Generator().manual_seed(seed)
        size = config.image_size
        pixel_values = torch.randn(batch_size, 3, size, size, generator=generator)
        return {"pixel_values": pixel_values, **self.mask_inputs(config, batch_size, seed, generator)}

    # (config, batch_size, seed) -> (B, L) bool masks as the method's processor draws them, for the default
    # `mask_inputs`; set as `staticmethod(...)`
    masks = None

    def mask_inputs(self, config, batch_size: int, seed: int, generator: torch.Generator) -> dict:
        """The inputs besides the pixels: by default `bool_masked_pos` from `masks`."""
        return {"bool_masked_pos": self.masks(config, batch_size, seed)}

    @property
    def classes(self):
        return hf_mim.get_method(self.method)

    def build(self, cls, config, seed=0):
        torch.manual_seed(seed)
        return cls(config).eval()

    def test_pretraining_output_shapes_and_finite_loss(self):
        config = self.tiny_config()
        model = self.build(self.classes.pretraining_class, config)
        out = model(**self.pretraining_inputs(config))
        assert out.loss.ndim == 0 and torch.isfinite(out.loss)
        self.check_pretraining_output(config, out)

    def check_pretraining_output(self, config, out):
        """Method-specific shape checks."""

    def test_backward_reaches_every_trainable_parameter(self):
        config = self.tiny_config()
        model = self.build(self.classes.pretraining_class, config).train()
        model(**self.pretraining_inputs(config)).loss.backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, f"no gradient reached: {missing}"

    def test_activation_checkpointing_recomputes_blocks_and_changes_nothing(self):
        import copy

        from hf_mim.training import enable_activation_checkpointing
        from hf_mim.modeling.vit import Attention

        config = self.tiny_config(drop_path_rate=0.2)  # random drop-path masks must replay in the recompute
        plain = self.build(self.classes.pretraining_class, config).train()
        checkpointed = copy.deepcopy(plain)
        enable_activation_checkpointing(checkpointed)
        inputs = self.pretraining_inputs(config, seed=1)
        results = []
        for model in (plain, checkpointed):
            calls = []
            hooks = [m.register_forward_hook(lambda *_: calls.append(1)) for m in model.modules() if isinstance(m, Attention)]
            torch.manual_seed(5)
            loss = model(**inputs).loss
            loss.backward()
            for hook in hooks:
                hook.remove()
            grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
            results.append((loss.detach(), grads, len(calls)))
        (loss_plain, grads_plain, calls_plain), (loss_ckpt, grads_ckpt, calls_ckpt) = results
        assert calls_ckpt > calls_plain, "no block was recomputed in the backward pass"
        assert torch.equal(loss_plain, loss_ckpt) and grads_plain.keys() == grads_ckpt.keys()
        for name, grad in grads_plain.items():
            torch.testing.assert_close(grads_ckpt[name], grad, rtol=1e-5, atol=1e-7, msg=name)

    # BEiT's head and CAE's visible/masked split take a per-image mask count, a shape that depends on data, so
    # they compile in pieces; the other methods must trace to one graph (no host sync, no branch on a tensor).
    compiles_to_one_graph = True

    def test_torch_compile_traces_and_changes_nothing(self):
        """torch.compile with the aot_eager backend (dynamo capture and AOT autograd, no C++ toolchain needed)
        gives the eager loss and gradients."""
        import copy

        config = self.tiny_config()
        eager = self.build(self.classes.pretraining_class, config).train()
        to_compile = copy.deepcopy(eager)
        inputs = self.pretraining_inputs(config, seed=2)
        torch._dynamo.reset()
        explanation = torch._dynamo.explain(to_compile)(**inputs)
        if self.compiles_to_one_graph:
            assert explanation.graph_break_count == 0, [str(b.reason)[:300] for b in explanation.break_reasons]
        results = []
        for model in (eager, torch.compile(to_compile, backend="aot_eager")):
            torch.manual_seed(0)
            loss = model(**inputs).loss
            loss.backward()
            grads = {n.removeprefix("_orig_mod."): p.grad for n, p in model.named_parameters() if p.grad is not None}
            results.append((loss.detach(), grads))
        torch._dynamo.reset()
        (loss_eager, grads_eager), (loss_compiled, grads_compiled) = results
        torch.testing.assert_close(loss_compiled, loss_eager, rtol=1e-5, atol=1e-6)
        assert grads_eager.keys() == grads_compiled.keys()
        for name, grad in grads_eager.items():
            torch.testing.assert_close(grads_compiled[name], grad, rtol=1e-4, atol=1e-6, msg=name)

    def test_same_inputs_same_loss(self):
        config = self.tiny_config()
        model = self.build(self.classes.pretraining_class, config)
        first = model(**self.pretraining_inputs(config, seed=3)).loss
        second = model(**self.pretraining_inputs(config, seed=3)).loss
        assert torch.equal(first, second)

    def test_save_load_round_trip_is_exact(self, tmp_path):
        config = self.tiny_config()
        model = self.build(self.classes.pretraining_class, config)
        model.save_pretrained(tmp_path)
        assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
        loaded = self.classes.pretraining_class.from_pretrained(tmp_path).eval()
        inputs = self.pretraining_inputs(config)
        assert torch.equal(model(**inputs).loss, loaded(**inputs).loss)
        for key, value in model.state_dict().items():
            assert torch.equal(value, loaded.state_dict()[key]), key

    def test_encoder_weights_move_to_feature_and_classification_models(self, tmp_path):
        config = self.tiny_config()
        pretrain = self.build(self.classes.pretraining_class, config)
        pretrain.save_pretrained(tmp_path)
        features = AutoModel.from_pretrained(tmp_path)
        classifier = AutoModelForImageClassification.from_pretrained(tmp_path, num_labels=3)
        assert type(features) is self.classes.model_class
        assert type(classifier) is self.classes.classification_class
        source = pretrain.state_dict()
        for key, value in features.state_dict().items():
            assert torch.equal(value, source[key]), key
        shared = [k for k in classifier.state_dict() if k.startswith("vit.blocks.0.mlp")]
        assert shared and all(torch.equal(classifier.state_dict()[k], source[k]) for k in shared)

    def test_classification_logits_and_loss(self):
        config = self.tiny_config(num_labels=5)
        model = self.build(self.classes.classification_class, config)
        pixel_values = self.pretraining_inputs(config)["pixel_values"]
        out = model(pixel_values=pixel_values, labels=torch.tensor([0, 4]))
        assert out.logits.shape == (2, 5)
        expected = torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 4]))
        torch.testing.assert_close(out.loss, expected)

    def test_features_shape(self):
        config = self.tiny_config()
        model = self.build(self.classes.model_class, config)
        pixel_values = self.pretraining_inputs(config)["pixel_values"]
        out = model(pixel_values=pixel_values, output_hidden_states=True)
        assert out.last_hidden_state.shape == (2, config.num_patches + 1, config.hidden_size)
        assert out.pooler_output.shape == (2, config.hidden_size)
        assert len(out.hidden_states) == config.num_hidden_layers + 1

    def test_wrong_image_size_names_expected_size(self):
        config = self.tiny_config()
        model = self.build(self.classes.model_class, config)
        bad = torch.randn(1, 3, config.image_size + config.patch_size, config.image_size + config.patch_size)
        try:
            model(pixel_values=bad)
        except ValueError as error:
            assert f"{config.image_size}x{config.image_size}" in str(error)
        else:
            assert config.position_embedding_type == "none" and config.relative_position_bias == "none"

    def test_remote_code_loads_without_hf_mim(self, tmp_path):
        """A fresh process where `import hf_mim` fails loads the folder with trust_remote_code=True."""
        config = self.tiny_config(num_labels=3)
        model = self.build(self.classes.classification_class, config)
        model.save_pretrained(tmp_path)
        processor = self.classes.image_processor_class(size={"height": config.image_size, "width": config.image_size})
        processor.save_pretrained(tmp_path)
        saved = json.loads((tmp_path / "config.json").read_text())
        assert {"AutoConfig", "AutoModel", "AutoModelForImageClassification"} <= set(saved["auto_map"])
        torch.manual_seed(0)
        pixel_values = torch.randn(2, 3, config.image_size, config.image_size)
        torch.save(pixel_values, tmp_path / "inputs.pt")
        expected = model(pixel_values=pixel_values).logits
        lines = run_without_hf_mim(tmp_path, "AutoModelForImageClassification", """
            logits = model(pixel_values=torch.load(folder + "/inputs.pt")).logits
            torch.save(logits, folder + "/remote_logits.pt")
            print(type(model).__name__, type(features).__name__, type(processor).__name__)
        """)
        names = " ".join(lines).split()
        assert names == [self.classes.classification_class.__name__, self.classes.model_class.__name__,
                         self.classes.image_processor_class.__name__]
        torch.testing.assert_close(torch.load(tmp_path / "remote_logits.pt"), expected, rtol=0, atol=1e-6)

    def test_exported_code_only_defines_the_model(self, tmp_path):
        config = self.tiny_config()
        self.build(self.classes.pretraining_class, config).save_pretrained(tmp_path)
        self.classes.image_processor_class().save_pretrained(tmp_path)
        for path in tmp_path.glob("*.py"):
            source = path.read_text()
            for forbidden in ("import hf_mim", "from hf_mim", "subprocess", "urllib", "requests", "socket",
                              "exec(", "eval(", "os.system", "hf_hub_download"):
                assert forbidden not in source, f"{path.name} contains {forbidden!r}"

    def test_config_round_trip_through_auto_config(self, tmp_path):
        config = self.tiny_config()
        config.save_pretrained(tmp_path)
        loaded = AutoConfig.from_pretrained(tmp_path)
        assert type(loaded) is type(config) and loaded.to_diff_dict() == config.to_diff_dict()

    def test_auto_image_processor_resolves(self, tmp_path):
        self.classes.image_processor_class().save_pretrained(tmp_path)
        self.tiny_config().save_pretrained(tmp_path)
        assert type(AutoImageProcessor.from_pretrained(tmp_path)) is self.classes.image_processor_class
