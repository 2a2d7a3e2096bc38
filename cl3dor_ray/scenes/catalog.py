"""The object categories of synthetic rooms: sizes, colours, where they stand, what they hold."""

from __future__ import annotations

from dataclasses import dataclass

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (200, 40, 40), "green": (50, 150, 60), "blue": (40, 70, 190), "yellow": (225, 205, 50),
    "white": (235, 235, 230), "black": (30, 30, 30), "brown": (120, 75, 40), "gray": (128, 128, 128),
    "orange": (230, 130, 30), "purple": (120, 50, 150), "pink": (230, 140, 170),
}


@dataclass(frozen=True)
class Category:
    label: str
    size_min: tuple[float, float, float]  # (x, y, z) metres
    size_max: tuple[float, float, float]
    colors: tuple[str, ...]
    shape: str  # how synth.py builds its mesh
    on: tuple[str, ...] = ()  # categories it may rest on; empty = the floor
    against_wall: bool = False
    holds: bool = False  # small objects may rest on its top
    prior: float = 1.0  # relative frequency when filling a room ("popular" objects for POPE)

    @property
    def small(self) -> bool:
        return bool(self.on)


_WOOD = ("brown", "white", "black", "gray")
_SURFACES = ("table", "desk", "cabinet", "nightstand")

CATEGORIES: dict[str, Category] = {c.label: c for c in [
    Category("table", (0.8, 0.6, 0.70), (1.6, 1.0, 0.78), _WOOD, "table", holds=True, prior=3.0),
    Category("desk", (1.0, 0.5, 0.72), (1.6, 0.8, 0.78), _WOOD, "table", against_wall=True, holds=True, prior=2.0),
    Category("chair", (0.42, 0.42, 0.80), (0.50, 0.50, 1.00), _WOOD + ("red", "blue"), "chair", prior=4.0),
    Category("sofa", (1.6, 0.80, 0.75), (2.2, 0.95, 0.90), ("gray", "blue", "green", "brown", "red"), "sofa",
             against_wall=True, holds=True, prior=1.5),
    Category("bed", (1.4, 1.9, 0.45), (2.0, 2.1, 0.60), ("white", "blue", "gray"), "bed", against_wall=True,
             holds=True, prior=1.0),
    Category("cabinet", (0.6, 0.4, 0.8), (1.2, 0.6, 1.2), _WOOD, "box", against_wall=True, holds=True, prior=2.0),
    Category("bookshelf", (0.8, 0.3, 1.6), (1.2, 0.4, 2.0), _WOOD, "shelf", against_wall=True, prior=1.0),
    Category("nightstand", (0.4, 0.4, 0.5), (0.5, 0.5, 0.6), _WOOD, "box", holds=True, prior=1.0),
    Category("trash can", (0.24, 0.24, 0.30), (0.36, 0.36, 0.45), ("gray", "black", "blue", "green"), "cylinder",
             prior=2.0),
    Category("refrigerator", (0.6, 0.6, 1.6), (0.8, 0.7, 1.9), ("white", "gray", "black"), "box",
             against_wall=True, prior=0.5),
    Category("plant", (0.30, 0.30, 0.50), (0.45, 0.45, 0.90), ("green",), "plant", prior=1.0),
    # small objects: a handful to a few dozen scan vertices each
    Category("cup", (0.07, 0.07, 0.08), (0.09, 0.09, 0.11), ("white", "red", "blue", "yellow", "black"),
             "cylinder", on=_SURFACES, prior=2.0),
    Category("book", (0.15, 0.10, 0.02), (0.25, 0.17, 0.05), ("red", "blue", "green", "yellow", "orange"),
             "box", on=_SURFACES, prior=2.5),
    Category("bottle", (0.06, 0.06, 0.20), (0.08, 0.08, 0.30), ("green", "blue", "white", "orange"), "bottle",
             on=_SURFACES, prior=1.5),
    Category("lamp", (0.16, 0.16, 0.35), (0.24, 0.24, 0.50), ("white", "yellow", "black", "orange"), "lamp",
             on=("nightstand", "desk", "table", "cabinet"), prior=1.5),
    Category("pillow", (0.40, 0.30, 0.10), (0.60, 0.40, 0.15), ("white", "blue", "red", "yellow", "pink", "purple"),
             "pillow", on=("bed", "sofa"), prior=2.0),
    Category("monitor", (0.45, 0.15, 0.35), (0.60, 0.20, 0.45), ("black", "gray"), "monitor",
             on=("desk", "table"), prior=1.5),
    Category("keyboard", (0.40, 0.13, 0.02), (0.45, 0.15, 0.03), ("black", "white", "gray"), "box",
             on=("desk", "table"), prior=1.5),
    Category("box", (0.20, 0.20, 0.15), (0.40, 0.35, 0.30), ("brown", "white"), "box",
             on=("table", "desk", "cabinet"), prior=1.0),
]}

# Absent objects that usually keep company with present ones: POPE's "adversarial" negatives.
CO_OCCURRENCE: dict[str, tuple[str, ...]] = {
    "table": ("chair", "cup", "book", "bottle"),
    "desk": ("chair", "monitor", "keyboard", "lamp"),
    "chair": ("table", "desk"),
    "sofa": ("pillow", "table", "lamp"),
    "bed": ("pillow", "nightstand", "lamp"),
    "nightstand": ("lamp", "bed", "book"),
    "monitor": ("keyboard", "desk"),
    "keyboard": ("monitor", "desk"),
    "cabinet": ("box", "book"),
    "bookshelf": ("book",),
    "cup": ("bottle", "table"),
    "bottle": ("cup",),
    "pillow": ("bed", "sofa"),
    "refrigerator": ("bottle", "trash can"),
}


def plural(label: str) -> str:
    if label.endswith("shelf"):
        return label[:-5] + "shelves"
    if label.endswith(("x", "s", "ch")):
        return label + "es"
    return label + "s"
