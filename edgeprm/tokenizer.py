"""The checkpoint's tokenizer and chat template, read with `tokenizers` and `jinja2` only (no torch, no transformers).

Both backends use this one class, so the torch scorer and the ONNX runtime tokenize identically. It follows what
transformers does for a fast tokenizer: `tokenizer.json` holds the model and the added tokens, `tokenizer_config.json`
(or `chat_template.jinja`) the chat template and the special-token names, and templates render in a sandboxed
jinja2 environment with `trim_blocks` and `lstrip_blocks`.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path


def _token_text(value) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value


class PRMTokenizer:
    """Token ids with character offsets, added tokens, and the chat template of one checkpoint."""

    def __init__(self, backend, config: dict, chat_template: str | None, source: str = "<memory>"):
        self.backend = backend
        self.config = config
        self.chat_template = chat_template
        self.source = source
        self.special = {k: _token_text(config.get(k)) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
        self._template = None

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> PRMTokenizer:
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        tj = model_dir / "tokenizer.json"
        if not tj.is_file():
            raise FileNotFoundError(f"{model_dir} has no tokenizer.json: edgeprm needs a fast tokenizer file beside "
                                    "config.json to locate step positions")
        try:
            backend = Tokenizer.from_file(str(tj))
        except Exception as e:
            raise ValueError(f"{tj} could not be read as a tokenizer ({e})") from e
        cfg_file = model_dir / "tokenizer_config.json"
        config = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
        template = config.get("chat_template")
        if isinstance(template, list):  # named templates: use the default one
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        jinja_file = model_dir / "chat_template.jinja"
        if template is None and jinja_file.is_file():
            template = jinja_file.read_text()
        return cls(backend, config, template, str(model_dir))

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def added_tokens(self) -> list[str]:
        return [t.content for t in self.backend.get_added_tokens_decoder().values()]

    @property
    def pad_token_id(self) -> int:
        pad = self.special.get("pad_token") or self.special.get("eos_token")
        tid = self.backend.token_to_id(pad) if pad else None
        return 0 if tid is None else tid

    def token_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def encode(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids (with the special tokens the tokenizer adds, as the reference recipes tokenize) and char offsets."""
        enc = self.backend.encode(text, add_special_tokens=True)
        return list(enc.ids), [tuple(o) for o in enc.offsets]

    def encode_plain(self, text: str) -> list[int]:
        return list(self.backend.encode(text, add_special_tokens=False).ids)

    def single_token_id(self, text: str, what: str) -> int:
        ids = self.encode_plain(text)
        if len(ids) != 1:
            raise ValueError(f"the {what} {text!r} must be exactly one token in this tokenizer; it encodes to {ids}")
        return ids[0]

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        if not self.chat_template:
            raise ValueError(f"{self.source}: the tokenizer has no chat template (tokenizer_config.json "
                             "'chat_template' or chat_template.jinja)")
        if self._template is None:
            import jinja2
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            def raise_exception(message):
                raise jinja2.exceptions.TemplateError(message)

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=["jinja2.ext.loopcontrols"])
            env.filters["tojson"] = lambda x, ensure_ascii=False, indent=None, separators=None, sort_keys=False: (
                json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys))
            env.globals["raise_exception"] = raise_exception
            env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
            self._template = env.from_string(self.chat_template)
        return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                     **{k: v for k, v in self.special.items() if v is not None})
