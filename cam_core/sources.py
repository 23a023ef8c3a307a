"""Where models come from: the bundled demo, torchvision architectures, and spec files.

A :class:`ModelSpec` is everything needed to build an :class:`~cam_core.Explainer`: how to build
the module, its modalities, class names, default layer, which output holds the logits, and an
optional checkpoint.  Spec files are Python files on the server side (never uploaded)::

    # my_spec.py
    from cam_core import Modality
    MODALITIES = [Modality("texture", channels=1), Modality("rgb")]   # forward's arguments
    CLASSES = ["real", "fake"]             # optional: class names
    DEFAULT_LAYER = "fusion"               # optional: layer preselected in the app and CLI
    OUTPUT = "logits"                      # optional: index/key/attribute/callable -> logits
    CHECKPOINT = "weights.pt"              # optional: state_dict, relative to this file
    NOTICE = "trained on 300 images"       # optional: one line shown with the model
    def build_model():                     # required: returns the nn.Module
        return MyNet()
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import importlib.util
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from .checkpoint import (
    CheckpointReport,
    CheckpointSource,
    apply_state_dict,
    read_state_dict,
    strip_wrapper_prefix,
)
from .errors import CamError, InputError, SpecError
from .modality import Modality

if TYPE_CHECKING:
    from .explainer import Explainer

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RANDOM_WEIGHTS_NOTICE",
    "SPEC_ENV_VAR",
    "TORCHVISION_MODELS",
    "ModelSpec",
    "available_models",
    "demo_spec",
    "load_spec",
    "spec_paths_from",
    "torchvision_spec",
]

SPEC_ENV_VAR = "CAM_EXPLORER_SPEC"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM_WEIGHTS_NOTICE = (
    "Random weights: no checkpoint is loaded, so these heatmaps mean nothing. "
    "Upload a state_dict checkpoint (.pt/.pth) for this architecture."
)

#: torchvision architectures offered without a spec file: name -> default CAM layer.  The
#: layers are the last spatial maps before pooling (Grad-CAM's usual choice); for ViT the last
#: block's ``ln_1``, since after the last block only the class token reaches the logits.
TORCHVISION_MODELS: dict[str, str] = {
    "resnet18": "layer4",
    "resnet50": "layer4",
    "vgg16": "features.29",
    "densenet121": "features.norm5",
    "efficientnet_b0": "features.8",
    "mobilenet_v3_large": "features.16",
    "convnext_tiny": "features.7",
    "vit_b_16": "encoder.layers.encoder_layer_11.ln_1",
    "swin_t": "features.7",
}
# The classifier's weight, whose rows give the number of classes a checkpoint was trained for.
_TORCHVISION_HEADS = {
    "resnet18": "fc.weight",
    "resnet50": "fc.weight",
    "vgg16": "classifier.6.weight",
    "densenet121": "classifier.weight",
    "efficientnet_b0": "classifier.1.weight",
    "mobilenet_v3_large": "classifier.3.weight",
    "convnext_tiny": "classifier.2.weight",
    "vit_b_16": "heads.head.weight",
    "swin_t": "head.weight",
}
# A spec is the user's code: whatever it raises at import or in build_model, SystemExit and other
# BaseExceptions included, becomes that model's SpecError, and the app keeps serving the other
# models and sessions.  Except Ctrl-C (KeyboardInterrupt: the person at the terminal wants the
# process to stop) and GeneratorExit (generator protocol, never an error of the spec).
_SPEC_FAULTS = BaseException
_NEVER_CAUGHT = (KeyboardInterrupt, GeneratorExit)
_SPEC_NAMES = ("build_model", "MODALITIES", "CLASSES", "DEFAULT_LAYER", "OUTPUT", "CHECKPOINT")


@dataclass(frozen=True)
class ModelSpec:
    """How to build one model and explain it.

    Attributes:
        name: the name shown in the model selector and accepted by the CLI's ``--model``.
        build_model: zero-argument callable returning the ``nn.Module`` (for torchvision
            models it also accepts ``num_classes=``).
        modalities: the model's inputs, in the order of its ``forward`` arguments.
        classes: class names, or ``None`` (classes are then shown as numbers).
        default_layer: layer preselected in the app and used when the CLI gets no ``--layer``.
        output: which part of the model's output holds the logits (index, key, attribute or
            callable); ``None`` = the default rule (a tensor; a ``logits`` key or attribute;
            else the first tensor).
        checkpoint: state_dict loaded after building when no other checkpoint is given.
        notice: one line to show with the model while no checkpoint is loaded
            (see :meth:`notice_for`).
        source: where the spec came from: ``"bundled demo"``, ``"torchvision"`` or the path
            of the spec file.
        num_classes_key: state_dict key of the classifier weight; when set, the model is built
            with as many classes as a given checkpoint has (a fine-tuned torchvision model).
    """

    name: str
    build_model: Callable[..., nn.Module]
    modalities: tuple[Modality, ...]
    classes: tuple[str, ...] | None = None
    default_layer: str | None = None
    output: int | str | Callable[[Any], Any] | None = None
    checkpoint: Path | None = None
    notice: str | None = None
    source: str = ""
    num_classes_key: str | None = None

    def load_model(
        self, checkpoint: CheckpointSource | None = None
    ) -> tuple[nn.Module, CheckpointReport | None]:
        """Build a fresh model and load ``checkpoint`` (else the spec's own), on the CPU.

        A new module is built on every call, so a failure never affects a model built before.

        Raises:
            SpecError: ``build_model`` raised or did not return an ``nn.Module``.
            ModelLoadError: the checkpoint was refused (see :func:`~cam_core.load_checkpoint`).
        """
        source = checkpoint if checkpoint is not None else self.checkpoint
        if source is None:
            return self._build(), None
        state, report = read_state_dict(source)
        kwargs = {}
        if self.num_classes_key is not None:
            stripped, _ = strip_wrapper_prefix(state, ())
            head = stripped.get(self.num_classes_key)
            if head is not None and head.dim() >= 1:
                kwargs["num_classes"] = int(head.shape[0])
        model = self._build(**kwargs)
        return model, apply_state_dict(model, state, report)

    def build_explainer(
        self, device: str = "auto", checkpoint: CheckpointSource | None = None
    ) -> Explainer:
        """An :class:`~cam_core.Explainer` on a freshly built model (see :meth:`load_model`)."""
        model, _ = self.load_model(checkpoint)
        return self.explainer_for(model, device=device)

    def explainer_for(self, model: nn.Module, device: str = "auto") -> Explainer:
        """An :class:`~cam_core.Explainer` on ``model`` (from :meth:`load_model`, whose
        :class:`~cam_core.checkpoint.CheckpointReport` the caller keeps) with this spec's
        modalities, output rule, classes and default layer."""
        from .explainer import Explainer

        try:
            return Explainer(
                model,
                list(self.modalities),
                device=device,
                output=self.output,
                classes=self.classes_for(model),
                default_layer=self.default_layer,
            )
        except InputError as exc:  # MODALITIES that do not fit forward(): the spec's fault
            raise SpecError(f"{self.source or self.name}: {exc}") from exc

    def classes_for(self, model: nn.Module) -> list[str] | None:
        """The class names, unless ``model`` was built with another number of classes."""
        if self.classes is None:
            return None
        if self.num_classes_key is not None:
            head = model.state_dict().get(self.num_classes_key)
            if head is not None and head.shape[0] != len(self.classes):
                return None
        return list(self.classes)

    def notice_for(self, checkpoint: object | None = None) -> str | None:
        """The notice to show: ``None`` once a checkpoint (given, or the spec's) is loaded."""
        if checkpoint is not None or self.checkpoint is not None:
            return None
        return self.notice

    def _build(self, **kwargs: int) -> nn.Module:
        try:
            model = self.build_model(**kwargs)
        except CamError:
            raise
        except _SPEC_FAULTS as exc:
            if isinstance(exc, _NEVER_CAUGHT):
                raise
            raise SpecError(
                f"{self._where(exc)}: build_model() of {self.name!r} raised "
                f"{type(exc).__name__}: {_one_line(exc)}{self._innermost(exc)}"
            ) from exc
        if not isinstance(model, nn.Module):
            raise SpecError(
                f"{self.source or self.name}: build_model() returned {type(model).__name__}; it "
                "must return the torch.nn.Module itself (e.g. `return MyNet()`)."
            )
        return model

    def _where(self, exc: BaseException) -> str:
        spec_file = Path(self.source) if self.source.endswith(".py") else None
        line = _line_in(exc, spec_file) if spec_file is not None else None
        return f"{self.source}:{line}" if line else (self.source or self.name)

    def _innermost(self, exc: BaseException) -> str:
        frames = traceback.extract_tb(exc.__traceback__)
        if not frames or frames[-1].filename == self.source:
            return ""
        return f" (at {frames[-1].filename}:{frames[-1].lineno})"


# -- spec files -----------------------------------------------------------------------------------


def load_spec(path: str | os.PathLike) -> ModelSpec:
    """Import a spec file and check what it defines.

    The spec's folder is put on ``sys.path`` (as when running ``python spec.py``), so the spec
    can import the model code next to it.  The model itself is built later, by
    :meth:`ModelSpec.load_model`.

    Raises:
        SpecError: naming the file, the line when there is one, and the cause: missing file,
            syntax error, an exception while importing, a missing ``build_model`` or
            ``MODALITIES``, a value of the wrong kind, a ``CHECKPOINT`` that does not exist.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise SpecError(f"Spec file {path} {what}; give the path of a .py file.")
    if path.suffix != ".py":
        raise SpecError(f"Spec file {path} is not a .py file; a spec is a Python file.")
    path = path.resolve()
    module = _import_spec(path)
    text = path.read_text(encoding="utf-8", errors="replace")

    def fail(name: str, problem: str) -> SpecError:
        line = _definition_line(text, name)
        return SpecError(f"{path}{f':{line}' if line else ''}: {problem}")

    build = getattr(module, "build_model", None)
    if build is None:
        unknown = [n for n in vars(module) if n.lower() in {s.lower() for s in _SPEC_NAMES}]
        hint = f" (found {', '.join(unknown)}; names are case-sensitive)" if unknown else ""
        raise SpecError(
            f"{path}: defines no build_model(){hint}; add `def build_model(): return MyNet()` "
            "returning your torch.nn.Module."
        )
    if not callable(build):
        raise fail(
            "build_model", f"build_model is a {type(build).__name__}; it must be a function."
        )
    modalities = _check_modalities(getattr(module, "MODALITIES", None), fail)
    classes = getattr(module, "CLASSES", None)
    if classes is not None:
        if isinstance(classes, str) or not isinstance(classes, Sequence) or not classes:
            raise fail("CLASSES", f"CLASSES must be a non-empty list of names, got {classes!r}.")
        classes = tuple(str(c) for c in classes)
    default_layer = getattr(module, "DEFAULT_LAYER", None)
    if default_layer is not None and not isinstance(default_layer, str):
        raise fail(
            "DEFAULT_LAYER",
            f"DEFAULT_LAYER must be a dotted layer path such as 'fusion', got {default_layer!r}.",
        )
    output = getattr(module, "OUTPUT", None)
    if output is not None and not (isinstance(output, (int, str)) or callable(output)):
        raise fail(
            "OUTPUT",
            f"OUTPUT must be an index, a key/attribute name or a function, got {output!r}.",
        )
    checkpoint = getattr(module, "CHECKPOINT", None)
    if checkpoint is not None:
        if not isinstance(checkpoint, (str, os.PathLike)):
            raise fail("CHECKPOINT", f"CHECKPOINT must be a path, got {checkpoint!r}.")
        checkpoint = (path.parent / Path(checkpoint).expanduser()).resolve()
        if not checkpoint.is_file():
            raise fail(
                "CHECKPOINT",
                f"CHECKPOINT {checkpoint} does not exist (paths are relative to the spec file).",
            )
    notice = getattr(module, "NOTICE", None)
    return ModelSpec(
        name=path.stem,
        build_model=build,
        modalities=modalities,
        classes=classes,
        default_layer=default_layer,
        output=output,
        checkpoint=checkpoint,
        notice=str(notice) if notice is not None else None,
        source=str(path),
    )


def _import_spec(path: Path) -> Any:
    digest = hashlib.blake2b(str(path).encode(), digest_size=4).hexdigest()
    module_name = f"_cam_explorer_spec_{path.stem.replace('-', '_')}_{digest}"
    import_spec = importlib.util.spec_from_file_location(module_name, path)
    if import_spec is None or import_spec.loader is None:
        raise SpecError(f"Spec file {path} cannot be imported as a Python module.")
    module = importlib.util.module_from_spec(import_spec)
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    # Registered before running, as `import` does: dataclasses and pickling look modules up.
    sys.modules[module_name] = module
    try:
        import_spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(module_name, None)
        raise SpecError(
            f"{path}:{exc.lineno}: syntax error: {exc.msg}"
            + (f" in `{exc.text.strip()}`" if exc.text else "")
            + "; fix the file and restart."
        ) from exc
    except _SPEC_FAULTS as exc:
        sys.modules.pop(module_name, None)
        if isinstance(exc, _NEVER_CAUGHT):
            raise
        line = _line_in(exc, path)
        inner = traceback.extract_tb(exc.__traceback__)
        at = (
            f" (at {inner[-1].filename}:{inner[-1].lineno})"
            if inner and inner[-1].filename != str(path)
            else ""
        )
        raise SpecError(
            f"{path}{f':{line}' if line else ''}: importing the spec raised "
            f"{type(exc).__name__}: {_one_line(exc)}{at}"
        ) from exc
    return module


def _check_modalities(value: object, fail: Callable[[str, str], SpecError]) -> tuple[Modality, ...]:
    example = 'MODALITIES = [Modality("rgb")]  # from cam_core import Modality'
    if value is None:
        raise fail("MODALITIES", f"defines no MODALITIES; add one per forward argument: {example}.")
    if isinstance(value, Modality):
        value = [value]
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise fail("MODALITIES", f"MODALITIES must be a non-empty list, got {value!r}: {example}.")
    for item in value:
        if not isinstance(item, Modality):
            raise fail(
                "MODALITIES",
                f"MODALITIES holds {item!r} ({type(item).__name__}); every entry must be a "
                f"cam_core.Modality: {example}.",
            )
    names = [m.name for m in value]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise fail("MODALITIES", f"MODALITIES names {', '.join(duplicates)} more than once.")
    args = [m.arg for m in value if m.arg is not None]
    if len(set(args)) != len(args):
        raise fail("MODALITIES", f"two modalities pass the same keyword argument: {args}.")
    return tuple(value)


def _definition_line(text: str, name: str) -> int | None:
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return None
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            return node.lineno
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return node.lineno
    return None


def _line_in(exc: BaseException, path: Path) -> int | None:
    """Line of the innermost traceback frame inside ``path``."""
    lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
    return lines[-1] if lines else None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


# -- torchvision and the demo ---------------------------------------------------------------------


def torchvision_spec(name: str, image_size: int = 224) -> ModelSpec:
    """A torchvision architecture with one ``rgb`` modality, ImageNet normalization.

    No weights are downloaded: the model has random weights until a checkpoint is loaded (the
    spec's :attr:`~ModelSpec.notice` says so).  A checkpoint fine-tuned on another number of
    classes is accepted: the classifier is built to match it.  ``image_size``: the input size
    (ViT's position embedding is built for it; the others accept any size).
    """
    if name not in TORCHVISION_MODELS:
        raise SpecError(
            f"Unknown torchvision model {name!r}; choose one of {', '.join(TORCHVISION_MODELS)}."
        )
    import torchvision

    extra = {"image_size": image_size} if name.startswith("vit_") else {}
    build = functools.partial(torchvision.models.get_model, name, weights=None, **extra)
    categories = torchvision.models.get_model_weights(name).DEFAULT.meta["categories"]
    return ModelSpec(
        name=name,
        build_model=build,
        modalities=(
            Modality(
                "rgb",
                size=image_size,
                mean=IMAGENET_MEAN,
                std=IMAGENET_STD,
                description=f"RGB image, resized to {image_size}x{image_size}",
            ),
        ),
        classes=tuple(categories),
        default_layer=TORCHVISION_MODELS[name],
        notice=RANDOM_WEIGHTS_NOTICE,
        source="torchvision",
        num_classes_key=_TORCHVISION_HEADS[name],
    )


def demo_spec() -> ModelSpec:
    """The bundled demo model (three modalities, trained weights shipped with the package)."""
    try:
        from . import demo
    except ImportError as exc:
        raise SpecError(f"The bundled demo could not be imported: {_one_line(exc)}") from exc
    needed = ("build_model", "MODALITIES", "CLASSES", "DEFAULT_LAYER")
    missing = [name for name in needed if not hasattr(demo, name)]
    if missing:
        raise SpecError(f"The bundled demo (cam_core.demo) lacks {', '.join(missing)}.")
    return ModelSpec(
        name="demo",
        build_model=demo.build_model,
        modalities=tuple(demo.MODALITIES),
        classes=tuple(demo.CLASSES),
        default_layer=demo.DEFAULT_LAYER,
        source="bundled demo",
    )


# -- what the app offers --------------------------------------------------------------------------


def spec_paths_from(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> list[Path]:
    """Spec files named on the command line and in ``CAM_EXPLORER_SPEC``.

    ``argv``: the script's arguments (``sys.argv``; for ``streamlit run app.py -- --spec a.py``
    Streamlit passes ``--spec a.py``); ``--spec PATH`` and ``--spec=PATH``, repeatable; other
    arguments are ignored.  ``environ``: ``CAM_EXPLORER_SPEC`` holds paths separated by
    ``os.pathsep``.  Command-line specs come first; duplicates are dropped.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    environ = os.environ if environ is None else environ
    if "--" in argv:
        argv = argv[argv.index("--") + 1 :]
    found: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--spec" and i + 1 < len(argv):
            found.append(argv[i + 1])
        elif arg.startswith("--spec="):
            found.append(arg.split("=", 1)[1])
    found += [p for p in environ.get(SPEC_ENV_VAR, "").split(os.pathsep) if p.strip()]
    paths: list[Path] = []
    for entry in found:
        path = Path(entry.strip()).expanduser()
        if path not in paths:
            paths.append(path)
    return paths


def available_models(
    spec_paths: Sequence[str | os.PathLike] = (), *, torchvision: bool = True
) -> dict[str, ModelSpec | SpecError]:
    """Every model the app offers: the demo, each spec file, the torchvision architectures.

    A spec (or the demo) that cannot be loaded appears with its :class:`SpecError` instead of a
    :class:`ModelSpec`, so the app can show the error and keep the other models usable.  Keys
    are display names: ``"demo"``, the spec file's stem (its path when the stem is taken), the
    torchvision names.
    """
    models: dict[str, ModelSpec | SpecError] = {}
    reserved = {"demo", *TORCHVISION_MODELS} if torchvision else {"demo"}
    try:
        models["demo"] = demo_spec()
    except SpecError as exc:
        models["demo"] = exc
    for entry in spec_paths:
        path = Path(entry)
        key = path.stem if path.stem not in reserved | models.keys() else str(path)
        try:
            spec = load_spec(path)
        except SpecError as exc:
            models[key] = exc
        else:
            models[key] = dataclasses.replace(spec, name=key)
    if torchvision:
        for name in TORCHVISION_MODELS:
            models[name] = torchvision_spec(name)
    return models
