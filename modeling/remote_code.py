"""Makes `save_pretrained` write a folder that loads without `hf_mim` installed (`trust_remote_code=True`).

transformers copies the saved class's file and its same-folder imports, but records only that one class in
`config.auto_map`; the other Auto classes of the method are filled in here so every entry point works.

The image processor's entry also lives in `config.json` (its file is copied with the model's): an
`auto_map` inside `preprocessor_config.json` makes transformers' pipelines guess a remote video processor and
prompt the user, even when `hf_mim` is installed.
"""

import os
import shutil
import sys

from transformers.dynamic_module_utils import get_relative_import_files


class RemoteCodeMixin:
    """Mixin for a method's `PreTrainedModel` base: `auto_classes` maps Auto class names to "module.Class"
    references (or bare class names of this module)."""

    auto_classes: dict[str, str] = {}

    def __init__(self, config, *args, **kwargs):
        # every hf-mim model starts here: a config changed after construction (setattr, update, from_pretrained
        # kwargs) is checked as a whole before any layer is built
        if hasattr(config, "validate"):
            config.validate()
        super().__init__(config, *args, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        module = type(self).__module__.rsplit(".", 1)[-1]
        config_module = type(self.config).__module__.rsplit(".", 1)[-1]
        references = {auto: name if "." in name else f"{module}.{name}" for auto, name in self.auto_classes.items()}
        self.config.auto_map = {"AutoConfig": f"{config_module}.{type(self.config).__name__}", **references}
        mine = [auto for auto, name in self.auto_classes.items() if name == type(self).__name__]
        # transformers copies this file and its imports only for classes with a class-level `_auto_class`
        type(self)._auto_class = mine[0] if mine else "AutoModel"
        result = super().save_pretrained(save_directory, *args, **kwargs)
        is_main = kwargs.get("is_main_process", True)
        if is_main:
            self.copy_sibling_modules(save_directory, [ref.split(".")[0] for ref in references.values()])
        return result

    def copy_sibling_modules(self, save_directory, module_names) -> None:
        """Copy the named sibling files of this model's module (and what they import) into the folder."""
        own_file = sys.modules[type(self).__module__].__file__
        folder = os.path.dirname(own_file)
        files = set()
        for name in set(module_names):
            path = os.path.join(folder, f"{name}.py")
            if os.path.exists(path):
                files.add(path)
                files.update(get_relative_import_files(path))
        for path in files:
            shutil.copy(path, os.path.join(save_directory, os.path.basename(path)))
