"""What can go wrong building or reading a problem: one typed error each, with the values that broke it."""

from __future__ import annotations

from typing import Final

from daimon_node.errors import DaimonError

DEL_KINDS: Final[tuple[str, ...]] = ("random", "learned")


class ProblemKitError(DaimonError):
    """A dataset, a parameter or a problem directory is unusable."""


class UnknownDELKind(ProblemKitError):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        super().__init__(f"unknown DEL kind {kind!r}; expected one of {', '.join(DEL_KINDS)}")


class DELNeedsTorch(ProblemKitError):
    """A learned DEL was asked for where torch (the ``train`` extra) is not installed."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"a learned DEL is trained with torch, which cannot be imported ({reason}); "
                         "install the train extra (pip install '.[train]') or use --del random")


class TooFewItems(ProblemKitError):
    """The split would leave the test set, a season's holdout or the training part empty."""

    def __init__(self, items: int, part: str, needed: int) -> None:
        self.items, self.part, self.needed = items, part, needed
        super().__init__(f"{items} items are too few for the split: {part} needs at least {needed}; "
                         "add data or change --test-fraction/--holdout-fraction/--seasons")
