"""Predictions from an exported ONNX file for plain lists of texts, as ``EffkitModel.predict``.

:class:`OnnxModel` opens the file with ONNX Runtime and the model folder's tokenizer, and does
what the graph's layout asks of a caller: it tokenizes, sorts the inputs by length, pads each
batch to its longest input and, for a graph that runs N inputs per row (a multiplexed model),
groups them N per row, filling a batch's last group with copies of its own members (whose
outputs are dropped), as the PyTorch model does. Results come back one per input, in input
order, so they match ``effkit.load(folder).predict(texts)`` (within the export's tolerance).

What it needs to know about the model it reads from the file's ``metadata_props``
(:data:`effkit.export.onnx.METADATA`), or, for a file exported before effkit wrote them, from
the model folder's ``effkit.json``; the group size is read from the graph's input shape.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from effkit.errors import ModelError
from effkit.export.runtime import INSTALL_HINT, missing, onnx_session
from effkit.task import Task


class OnnxModel:
    """An exported ONNX file with its tokenizer: logits and predictions for lists of texts.

    ``path`` is the ``.onnx`` file or a model folder holding ``model.onnx``. The tokenizer is
    ``tokenizer`` (an object or a folder) when given, else the one in the file's folder, else
    the one in the model folder the export recorded. ``threads`` sets ONNX Runtime's intra-op
    threads (default: as many as torch uses).
    """

    def __init__(
        self, path: str | Path, *, tokenizer: Any = None, threads: int | None = None
    ) -> None:
        path = Path(path)
        if path.is_dir():
            path = path / "model.onnx"
        if not path.is_file():
            raise ModelError(f"ONNX file '{path}' does not exist",
                             hint="write one with: effkit export MODEL_DIR")  # fmt: skip
        if missing() is not None:
            raise ModelError("running an ONNX file needs onnxruntime, which is not installed",
                             where=str(path), hint=INSTALL_HINT)  # fmt: skip
        self.path = path
        self.session = onnx_session(path, threads)
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        folder = self._folder(meta)
        facts = meta if "effkit.task" in meta else self._saved(folder)
        self.task = Task.model_validate(json.loads(facts["effkit.task"]))
        self.max_length = int(facts.get("effkit.max_length") or 128)
        self.quantized: str | None = meta.get("effkit.quantized") or None
        self.inputs = [i.name for i in self.session.get_inputs()]
        shape = self.session.get_inputs()[0].shape
        self.group_size: int | None = int(shape[1]) if len(shape) == 3 else None
        """N for a graph that runs N inputs per row (from its input shape), None otherwise."""
        self.tokenizer = self._tokenizer(tokenizer, folder)

    def _folder(self, meta: dict[str, str]) -> Path:
        """The model folder: the file's own when it has a tokenizer, else the recorded one."""
        recorded = meta.get("effkit.model_dir")
        if (self.path.parent / "tokenizer_config.json").exists() or not recorded:
            return self.path.parent
        return Path(recorded)

    def _saved(self, folder: Path) -> dict[str, str]:
        """The facts of a file exported without effkit's metadata, from its model folder."""
        if not (folder / "effkit.json").exists():
            raise ModelError(f"'{self.path}' carries no effkit metadata and '{folder}' is not "
                             "its model folder (no effkit.json)", where=str(self.path),
                             hint="export it again with effkit export")  # fmt: skip
        saved = json.loads((folder / "effkit.json").read_text(encoding="utf-8"))
        return {"effkit.task": json.dumps(saved["task"]),
                "effkit.max_length": str(saved.get("max_length", 128))}  # fmt: skip

    def _tokenizer(self, tokenizer: Any, folder: Path) -> Any:
        if tokenizer is not None and not isinstance(tokenizer, (str, Path)):
            return tokenizer
        source = Path(tokenizer) if tokenizer is not None else folder
        if not (source / "tokenizer_config.json").exists():
            raise ModelError(f"no tokenizer in '{source}' for '{self.path}'",
                             hint="pass tokenizer= (the model folder or a tokenizer)")  # fmt: skip
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(source))

    def rows(self, count: int) -> list[int]:
        """The rows a batch of ``count`` inputs runs as (indices into the batch): the inputs,
        and for a grouped graph copies that fill the last group (as the PyTorch model fills it)."""
        size = self.group_size or 1
        rows: list[int] = []
        for start in range(0, count, size):
            members = list(range(start, min(start + size, count)))
            rows += (members * math.ceil(size / len(members)))[:size]
        return rows

    def logits(
        self, texts: list[str], *, pairs: list[str] | None = None, batch_size: int = 32
    ) -> list[torch.Tensor]:
        """Logits of every text, in order: ``[C]`` per text, ``[L, C]`` per token for token tasks
        (``L`` its tokens). ``batch_size`` inputs run at once (rounded up to whole groups)."""
        from effkit.data import encode_texts

        features = encode_texts(texts, self.tokenizer, self.task.type, self.max_length,
                                pairs=pairs)  # fmt: skip
        return self.feature_logits(features, batch_size=batch_size)

    def feature_logits(
        self, features: list[dict[str, Any]], *, batch_size: int = 32
    ) -> list[torch.Tensor]:
        """Logits for encoded inputs (``input_ids``, ``attention_mask``...), in order."""
        from effkit.data import Collator
        from effkit.inference import length_batches, own_rows

        if batch_size < 1:
            raise ModelError(f"batch_size must be at least 1, got {batch_size}")
        collate = Collator(pad_token_id=self.tokenizer.pad_token_id or 0)
        out: list[torch.Tensor] = [torch.empty(0)] * len(features)
        for idx in length_batches(features, batch_size):
            batch = collate([features[idx[row]] for row in self.rows(len(idx))])
            feed = {}
            for name in self.inputs:
                value = batch.get(name)
                if value is None:  # segment ids a tokenizer does not give: one segment
                    value = torch.zeros_like(batch["input_ids"])
                if self.group_size is not None:
                    value = value.view(-1, self.group_size, value.shape[-1])
                feed[name] = value.long().numpy()
            logits = torch.from_numpy(self.session.run(["logits"], feed)[0])
            if self.group_size is not None:
                logits = logits.reshape(-1, *logits.shape[2:])
            own_rows(out, features, idx, logits)  # an input's own row precedes its copies
        return out

    def predict(
        self, texts: list[str], *, pairs: list[str] | None = None, batch_size: int = 32
    ) -> list[dict[str, Any]]:
        """One prediction per text, in order, as :func:`effkit.inference.predict_texts` gives:
        ``{"label", "score", "scores"}`` for sequence tasks, ``{"tokens", "tags"}`` (one tag
        per whitespace-separated word; words past the length limit get ``"O"``) for token
        tasks."""
        from effkit.data import encode_texts
        from effkit.inference import predictions

        features = encode_texts(texts, self.tokenizer, self.task.type, self.max_length,
                                pairs=pairs)  # fmt: skip
        logits = self.feature_logits(features, batch_size=batch_size)
        return predictions(self.task, texts, features, logits)
