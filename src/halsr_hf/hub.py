"""``halsr-hf push-to-hub {model,dataset,space}``: publish to the Hugging Face Hub.

- ``model --model-dir DIR --repo-id ID [--eval-results summary.json ...] [--roi-model DIR]``: a
  repository that loads anywhere with ``trust_remote_code=True``: ``model.safetensors``,
  ``config.json`` (``auto_map``, ``custom_pipelines``), ``preprocessor_config.json``, the code files
  (relative imports only), the ROI model (localiser or box regressor) in ``roi/``, the training provenance files found in
  DIR, the evaluation summaries in ``evaluation/`` and the model card (``README.md``) rendered from
  them. The folder is always re-saved through the installed package's pipeline, so a Trainer
  checkpoint (weights + config only) gets code, ``custom_pipelines`` and ``roi/`` too. Without
  ``--eval-results`` the summaries in ``DIR/evaluation/`` are published (the bundled model and
  every folder this command wrote have them); a DIR whose card has evaluation results but no
  summary to render them from is refused, unless ``--no-eval-results``: the evaluated numbers are
  never dropped silently.
- ``dataset --dataset-dir DIR --repo-id ID``: a ``save_to_disk`` ``DatasetDict`` pushed with
  ``DatasetDict.push_to_hub``, with ``DIR/README.md`` (the dataset card of ``halsr-hf prepare``).
- ``space --repo-id ID [--space-dir space/]``: the Gradio demo as a Space.

Every command takes ``--dry-run OUT``: write the folder that would be uploaded to OUT and upload
nothing (OUT must not exist or be empty, unless ``--overwrite``). The token comes from ``HF_TOKEN``
or ``hf auth login``. Offline (``HF_HUB_OFFLINE=1``), without a token, unauthorised or without
network, the command prints one line saying so and exits with status 2, within seconds.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import sys
from pathlib import Path

from datasets import DatasetDict
from huggingface_hub import HfApi, ModelCard, constants, get_token
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from . import CardiacLVSegmentationPipeline, HalsrForSemanticSegmentation, HalsrImageProcessor
from .pipeline_halsr import load_roi_model
from .atomic import atomic_folder, check_output_folder
from .data.card import upload_dataset
from .errors import InputError
from .hub_cli import build_parser  # noqa: F401  (the parser, without the Hub libraries)
from .model_card import PROVENANCE_FILES, check_model_card, load_summary, package_version, write_model_card

#: Files never uploaded from a Space folder (also left out of its dry-run copy).
SPACE_IGNORE = ["__pycache__", "*.pyc", ".DS_Store", ".gradio", "flagged", ".ipynb_checkpoints", "*.egg-info"]
_SELF_IMPORT = re.compile(r"^\s*(from\s+halsr_hf(\s|\.)|import\s+halsr_hf\b)", re.MULTILINE)


class PublishError(RuntimeError):
    """The Hub cannot be used (offline, no token, unauthorised, unreachable): one-line message."""


# ---- helpers -------------------------------------------------------------------------------------


def _check_online() -> None:
    if constants.HF_HUB_OFFLINE:
        raise PublishError(
            "the Hugging Face Hub is disabled here (HF_HUB_OFFLINE=1): nothing was uploaded; "
            "unset HF_HUB_OFFLINE to publish, or pass --dry-run OUT to only build the folder"
        )


def _get_token() -> str:
    token = os.environ.get("HF_TOKEN") or get_token()
    if not token:
        raise PublishError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (a token with write access)")
    return token


def _transport_errors() -> tuple:
    errors = [ConnectionError, TimeoutError]
    for module_name, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)),
                               ("requests", ("ConnectionError", "Timeout"))):
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        errors += [getattr(module, n) for n in names if isinstance(getattr(module, n, None), type)]
    return tuple(errors)


def _network(action: str, repo_id: str, call):
    """Run one Hub call, turning its failures into a one-line :class:`PublishError`."""
    try:
        return call()
    except OfflineModeIsEnabled:
        raise PublishError("the Hugging Face Hub is disabled here (HF_HUB_OFFLINE=1): nothing was uploaded") from None
    except HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        if status == 401:
            raise PublishError(f"{action} {repo_id}: unauthorised (HTTP 401): the token was rejected; "
                               "set HF_TOKEN to a valid token or run `hf auth login`") from None
        if status == 403:
            raise PublishError(f"{action} {repo_id}: forbidden (HTTP 403): the token has no write access "
                               "to this namespace") from None
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise PublishError(f"{action} {repo_id}: the Hub answered HTTP {status}: {first_line}") from None
    except _transport_errors() as error:
        raise PublishError(f"{action} {repo_id}: cannot reach {constants.ENDPOINT} ({type(error).__name__}: {error}); "
                           "check the network, or pass --dry-run OUT to only build the folder") from None


def _print_dry_run(target: str, folder: Path) -> None:
    print(f"dry run: {target} would hold ({folder}):")
    for name in list_files(folder):
        print(f"  {name}")


def list_files(folder) -> list[str]:
    """Relative POSIX paths of the files under ``folder``, sorted."""
    folder = Path(folder)
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def check_self_contained(folder) -> None:
    """Raise if a ``.py`` file in the folder imports ``halsr_hf`` (remote code must use relative imports)."""
    bad = [p.relative_to(folder).as_posix() for p in Path(folder).rglob("*.py") if _SELF_IMPORT.search(p.read_text())]
    if bad:
        raise RuntimeError(f"code files import halsr_hf (not loadable without the package): {', '.join(bad)}")


# ---- model -----------------------------------------------------------------------------------------


def _load_for_saving(model_dir: Path, roi_model):
    if not (model_dir / "config.json").is_file():
        raise InputError(f"--model-dir {model_dir}: no config.json there (expected a HALSR-Net model folder)")
    try:
        model = HalsrForSemanticSegmentation.from_pretrained(str(model_dir))
    except (OSError, ValueError) as error:
        raise InputError(f"--model-dir {model_dir}: cannot load a HALSR-Net model ({error})") from None
    roi_source = Path(roi_model) if roi_model else model_dir / (getattr(model.config, "roi_subfolder", None) or "roi")
    if not (roi_source / "config.json").is_file():
        raise InputError(
            f"--model-dir {model_dir}: no ROI model (localiser or box regressor) in {roi_source} (a repository needs both stages); "
            "pass --roi-model FOLDER"
        )
    roi = load_roi_model(str(roi_source), None, f"--roi-model {roi_source}")
    if (model_dir / "preprocessor_config.json").is_file():
        processor = HalsrImageProcessor.from_pretrained(str(model_dir))
    else:  # a Trainer checkpoint: the processor of the training crop sizes
        processor = HalsrImageProcessor(size=model.config.image_size, roi_size=roi.config.image_size)
    return CardiacLVSegmentationPipeline(model=model.eval(), image_processor=processor, roi_model=roi.eval())


def _point_pipeline_default_at(config_path: Path, repo_id: str) -> None:
    """The default model of the ``custom_pipelines`` task of a published repository is the
    repository itself, in transformers 5's format ``{"model": [repo_id, revision]}`` (the pipeline's
    ``save_pretrained`` writes no default: the registered one is a folder of this installation)."""

    config = json.loads(config_path.read_text())
    for spec in (config.get("custom_pipelines") or {}).values():
        if isinstance(spec, dict):
            spec["default"] = {"model": [repo_id, "main"]}
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def folder_summaries(model_dir) -> list[Path]:
    """The evaluation summaries a model folder carries, in the order this command writes them:
    ``evaluation/summary.json``, ``evaluation/summary_2.json``, ..."""
    folder = Path(model_dir) / "evaluation"
    found = []
    while (path := folder / ("summary.json" if not found else f"summary_{len(found) + 1}.json")).is_file():
        found.append(path)
    return found


def card_has_eval_results(model_dir) -> bool:
    """Whether ``model_dir/README.md`` has a ``model-index`` (evaluation results in its metadata)."""
    readme = Path(model_dir) / "README.md"
    if not readme.is_file():
        return False
    try:
        return bool(ModelCard.load(readme).data.eval_results)
    except Exception:  # noqa: BLE001 - an unparsable card: look for the key itself
        return re.search(r"^model-index:", readme.read_text(errors="replace"), re.MULTILINE) is not None


def resolve_eval_summaries(model_dir, eval_summaries=None) -> list:
    """The summaries to publish: ``eval_summaries`` when given (``[]``: none, deliberately), else
    the folder's own (:func:`folder_summaries`). Raises :class:`InputError` when the folder's card
    has evaluation results that no summary can render again: re-rendering would drop them."""
    if eval_summaries is not None:
        return list(eval_summaries)
    found = folder_summaries(model_dir)
    if not found and card_has_eval_results(model_dir):
        raise InputError(
            f"--model-dir {model_dir}: its model card (README.md) has evaluation results (model-index), but the folder "
            "has no evaluation/summary.json to publish them from, and the card is rendered again: pass "
            "--eval-results SUMMARY_JSON (halsr-hf evaluate's summary.json), or --no-eval-results to publish without them"
        )
    return found


def build_model_folder(model_dir, out, repo_id: str, eval_summaries=None, roi_model=None, template=None,
                       overwrite: bool = False) -> Path:
    """Build the model repository folder in ``out`` (temporary folder + rename); returns ``out``.

    ``out=None`` builds it in a new temporary folder (the caller removes it). ``eval_summaries``:
    see :func:`resolve_eval_summaries` (``None``: the folder's own)."""
    model_dir = Path(model_dir)
    eval_summaries = resolve_eval_summaries(model_dir, eval_summaries)
    for path in eval_summaries:  # fail on a bad summary before any work
        load_summary(path)
    out = Path(out) if out is not None else None
    if out is not None:
        check_output_folder(out, overwrite, "--dry-run")
    pipe = _load_for_saving(model_dir, roi_model)
    with atomic_folder(out) as staged:
        pipe.save_pretrained(str(staged))
        _point_pipeline_default_at(staged / "config.json", repo_id)
        pairs = [(model_dir, staged)]  # the ROI model's own training record goes with it
        roi_name = getattr(pipe.model.config, "roi_subfolder", "roi")
        if pipe.roi_model is not None and (model_dir / roi_name).is_dir() and (staged / roi_name).is_dir():
            pairs.append((model_dir / roi_name, staged / roi_name))
        for folder, target in pairs:
            for name in PROVENANCE_FILES:
                if (folder / name).is_file():
                    shutil.copy2(folder / name, target / name)
        copies = []
        if eval_summaries:
            (staged / "evaluation").mkdir()
            for index, path in enumerate(eval_summaries):
                name = "summary.json" if index == 0 else f"summary_{index + 1}.json"
                copies.append(shutil.copy2(path, staged / "evaluation" / name))
        if (model_dir / "evaluation" / "orientation.json").is_file():  # read by the card
            (staged / "evaluation").mkdir(exist_ok=True)
            shutil.copy2(model_dir / "evaluation" / "orientation.json", staged / "evaluation" / "orientation.json")
        check_self_contained(staged)
        if not (staged / "model.safetensors").is_file():
            raise RuntimeError(f"{staged}: no model.safetensors was written")
        card = write_model_card(staged, copies, repo_id=repo_id, template_path=template)
        check_model_card(card)
    return staged if out is None else out


def create_repo(repo_id: str, repo_type: str, token: str, private: bool, space_sdk: str | None = None):
    """``HfApi.create_repo(exist_ok=True)``: also checks the token and the namespace before any work."""
    kwargs = {"repo_type": repo_type, "private": private, "exist_ok": True}
    if space_sdk:
        kwargs["space_sdk"] = space_sdk
    api = HfApi(token=token)
    return _network("creating", repo_id, lambda: api.create_repo(repo_id, **kwargs))


def upload_folder(folder, repo_id: str, repo_type: str, token: str, commit_message: str):
    """``HfApi.upload_folder``: one commit with every file of ``folder``."""
    api = HfApi(token=token)
    return _network("uploading to", repo_id, lambda: api.upload_folder(
        folder_path=str(folder), repo_id=repo_id, repo_type=repo_type, commit_message=commit_message))


def push_model(args) -> int:
    if not (Path(args.model_dir) / "config.json").is_file():
        raise InputError(f"--model-dir {args.model_dir}: no config.json there (expected a HALSR-Net model folder)")
    if args.eval_results and args.no_eval_results:
        raise InputError("--eval-results and --no-eval-results: give one of them")
    summaries = resolve_eval_summaries(args.model_dir, [] if args.no_eval_results else args.eval_results or None)
    for path in summaries:
        load_summary(path)
    if summaries and not args.eval_results:
        print(f"evaluation results: {', '.join(str(p) for p in summaries)} (the model folder's; --eval-results to "
              "publish others)")
    if args.dry_run is not None:
        folder = build_model_folder(args.model_dir, args.dry_run, args.repo_id, summaries,
                                    roi_model=args.roi_model, template=args.template, overwrite=args.overwrite)
        _print_dry_run(f"the model repository {args.repo_id}", folder)
        return 0
    _check_online()
    token = _get_token()
    create_repo(args.repo_id, "model", token, args.private)
    folder = build_model_folder(args.model_dir, None, args.repo_id, summaries,
                                roi_model=args.roi_model, template=args.template)
    try:
        message = args.commit_message or f"Upload HALSR-Net with its ROI model and model card (halsr-hf {package_version()})"
        upload_folder(folder, args.repo_id, "model", token, message)
        print(f"uploaded {len(list_files(folder))} files to https://huggingface.co/{args.repo_id}")
        return 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ---- dataset ---------------------------------------------------------------------------------------


def _load_dataset_dict(dataset_dir: Path):
    if not (dataset_dir / "dataset_dict.json").is_file():
        raise InputError(f"--dataset-dir {dataset_dir}: not a DatasetDict saved with save_to_disk (no dataset_dict.json)")
    return DatasetDict.load_from_disk(str(dataset_dir))


def build_dataset_folder(dataset_dir, out, overwrite: bool = False) -> Path:
    """What ``push_to_hub`` uploads: the card and one Parquet file per split (``data/SPLIT-00000-of-00001.parquet``)."""
    dataset_dir, out = Path(dataset_dir), Path(out)
    dataset = _load_dataset_dict(dataset_dir)
    check_output_folder(out, overwrite, "--dry-run")
    with atomic_folder(out) as staged:
        if (dataset_dir / "README.md").is_file():
            shutil.copy2(dataset_dir / "README.md", staged / "README.md")
        (staged / "data").mkdir()
        for split, part in dataset.items():
            part.to_parquet(str(staged / "data" / f"{split}-00000-of-00001.parquet"))
    return staged if out is None else out


def push_dataset(args) -> int:
    dataset_dir = Path(args.dataset_dir)
    card = dataset_dir / "README.md"
    if args.dry_run is not None:
        folder = build_dataset_folder(dataset_dir, args.dry_run, overwrite=args.overwrite)
        _print_dry_run(f"the dataset repository {args.repo_id}", folder)
        if not card.is_file():
            print(f"warning: {card} not found: the repository would get an automatic card without license or description")
        return 0
    _check_online()
    token = _get_token()
    dataset = _load_dataset_dict(dataset_dir)
    message = args.commit_message or f"Upload dataset with halsr-hf {package_version()}"
    create_repo(args.repo_id, "dataset", token, args.private)
    if not card.is_file():
        print(f"warning: {card} not found: the repository gets an automatic card without license or description")
    _network("uploading the dataset to", args.repo_id, lambda: upload_dataset(
        dataset, args.repo_id, card.read_text() if card.is_file() else None, token=token, private=args.private,
        commit_message=message))
    print(f"uploaded {', '.join(f'{k} ({len(v)} rows)' for k, v in dataset.items())} to "
          f"https://huggingface.co/datasets/{args.repo_id}")
    return 0


# ---- space -----------------------------------------------------------------------------------------


def _default_space_dir() -> Path:
    """``./space`` (run from a checkout of the halsr-hf repository); the Space is not part of the
    installed package, so anywhere else ``--space-dir`` is required."""
    here = Path("space")
    if not (here / "app.py").is_file():
        raise InputError(
            "no Space folder given and ./space/app.py not found: pass --space-dir DIR (the space/ folder "
            "of the halsr-hf repository: app.py, README.md, requirements.txt)"
        )
    return here


def _ignored(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in SPACE_IGNORE)


def build_space_folder(space_dir, out, overwrite: bool = False) -> Path:
    """Copy the Space folder without caches (``SPACE_IGNORE``); ``out=None``: a temporary folder."""
    space_dir = Path(space_dir)
    if not (space_dir / "app.py").is_file():
        raise InputError(f"--space-dir {space_dir}: no app.py there (expected the Gradio demo folder)")
    readme = space_dir / "README.md"
    if not readme.is_file() or not re.search(r"^sdk:\s*gradio\s*$", readme.read_text(), re.MULTILINE):
        raise InputError(f"--space-dir {space_dir}: README.md with 'sdk: gradio' in its front matter is required by Spaces")
    out = Path(out) if out is not None else None
    if out is not None:
        check_output_folder(out, overwrite, "--dry-run")
    with atomic_folder(out) as staged:
        shutil.copytree(space_dir, staged, dirs_exist_ok=True,
                        ignore=lambda _dir, names: [n for n in names if _ignored(n)])
    return staged if out is None else out


def push_space(args) -> int:
    space_dir = Path(args.space_dir) if args.space_dir else _default_space_dir()
    if args.dry_run is not None:
        folder = build_space_folder(space_dir, args.dry_run, overwrite=args.overwrite)
        _print_dry_run(f"the Space {args.repo_id}", folder)
        return 0
    _check_online()
    token = _get_token()
    folder = build_space_folder(space_dir, None)  # checks the folder before the repository is created
    try:
        create_repo(args.repo_id, "space", token, args.private, space_sdk="gradio")
        message = args.commit_message or f"Upload the HALSR-Net Gradio demo (halsr-hf {package_version()})"
        upload_folder(folder, args.repo_id, "space", token, message)
        print(f"uploaded {len(list_files(folder))} files to https://huggingface.co/spaces/{args.repo_id}")
        return 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ---- command line ------------------------------------------------------------------------------------


def main(argv=None) -> int:
    """``halsr-hf push-to-hub``: parsed by :func:`halsr_hf.hub_cli.build_parser` (light, so that
    ``--help`` answers at once), run here."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    return run(args)


def run(args) -> int:
    if args.overwrite and args.dry_run is None:
        print("halsr-hf push-to-hub: error: --overwrite only applies to --dry-run OUT", file=sys.stderr)
        return 2
    try:
        return int({"model": push_model, "dataset": push_dataset, "space": push_space}[args.kind](args) or 0)
    except (PublishError, InputError) as error:
        print(f"halsr-hf push-to-hub: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
