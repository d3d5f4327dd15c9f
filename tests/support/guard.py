"""SecretGuard: the secrets a test used may appear in no output, file or raw flash image."""

from __future__ import annotations

from pathlib import Path


class SecretGuard:
    """Secrets a test used; at the end none may appear in any output, file or raw flash image."""

    def __init__(self) -> None:
        self.secrets: list[str] = []
        self.outputs: list[tuple[str, str]] = []
        self.files: list[Path] = []
        self.binaries: list[Path] = []  # raw images (the virtual flash): searched byte for byte

    def secret(self, value: str) -> str:
        self.secrets.append(value)
        return value

    def output(self, name: str, text: str | bytes) -> None:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        self.outputs.append((name, text))

    def check(self) -> None:
        outs = list(self.outputs)
        for f in self.files:
            if f.exists():
                outs.append((str(f), f.read_text(encoding="utf-8", errors="replace")))
        for name, text in outs:
            for s in self.secrets:
                assert s not in text, f"a secret appeared in {name}"
        for f in self.binaries:
            if f.exists():
                raw = f.read_bytes()
                for s in self.secrets:
                    assert s.encode() not in raw, f"a secret appeared in the raw image {f}"
