"""Makes `save_pretrained` write a folder that loads without `hf_mim` installed (`trust_remote_code=True`).

transformers copies the saved class's file and its same-folder imports, but records only that one class in
`config.auto_map`; the other Auto classes of the method are filled in here so every entry point works.
"""


class RemoteCodeMixin:
    """Mixin for a method's `PreTrainedModel` base: `auto_classes` maps Auto class names to class names."""

    auto_classes: dict[str, str] = {}

    def save_pretrained(self, save_directory, *args, **kwargs):
        module = type(self).__module__.rsplit(".", 1)[-1]
        config_module = type(self.config).__module__.rsplit(".", 1)[-1]
        self.config.auto_map = {
            "AutoConfig": f"{config_module}.{type(self.config).__name__}",
            **{auto: f"{module}.{name}" for auto, name in self.auto_classes.items()},
        }
        mine = [auto for auto, name in self.auto_classes.items() if name == type(self).__name__]
        # transformers copies this file and its imports only for classes with a class-level `_auto_class`
        type(self)._auto_class = mine[0] if mine else "AutoModel"
        return super().save_pretrained(save_directory, *args, **kwargs)
