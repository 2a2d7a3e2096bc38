"""The object categories of synthetic rooms: sizes, colours, where they stand, what they hold."""

from __future__ import annotations

from dataclasses import dataclass

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (200, 40, 40),
    "green": (50, 150, 60),
    "blue": (40, 70, 190),
    "yellow": (225, 205, 50),
    "white": (235, 235, 230),
    "black": (30, 30, 30),
    "brown": (120, 75, 40),
    "gray": (128, 128, 128),
    "orange": (230, 130, 30),
    "purple": (120, 50, 150),
    "pink": (230, 140, 170),
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


# A controlled testbed (README, "The synthetic world"): palettes are wide and overlap, so a colour
# question is not answered by the category it names, and the small categories that share a
# surface also share box sizes, so what tells a cup from a glass or a can is its shape.
_WOOD = ("brown", "white", "black", "gray", "red")
_SURFACES = ("table", "desk", "cabinet", "nightstand")
_VIVID = ("red", "green", "blue", "yellow", "white", "black", "orange", "purple", "pink")
# Size families: the categories of one family draw their boxes from the same range.
_VESSEL = ((0.06, 0.06, 0.08), (0.10, 0.10, 0.24))  # cup (its handle inside the box), glass, can, bottle
_FLAT = ((0.16, 0.11, 0.02), (0.42, 0.26, 0.12))  # book, box, keyboard
_ROUND = ((0.24, 0.24, 0.30), (0.40, 0.40, 0.60))  # lamp, trash can, plant (round, upright)
_DRINKS = ("white", "red", "blue", "yellow", "black", "green", "orange", "pink")

CATEGORIES: dict[str, Category] = {
    c.label: c
    for c in [
        Category("table", (0.8, 0.6, 0.70), (1.6, 1.0, 0.78), _WOOD, "table", holds=True, prior=3.0),
        Category("desk", (1.0, 0.5, 0.72), (1.6, 0.8, 0.78), _WOOD, "table", against_wall=True, holds=True, prior=2.0),
        Category("chair", (0.42, 0.42, 0.80), (0.50, 0.50, 1.00), _WOOD + ("blue", "green"), "chair", prior=4.0),
        Category(
            "sofa",
            (1.6, 0.80, 0.75),
            (2.2, 0.95, 0.90),
            ("gray", "blue", "green", "brown", "red", "purple"),
            "sofa",
            against_wall=True,
            holds=True,
            prior=1.5,
        ),
        Category(
            "bed",
            (1.4, 1.9, 0.45),
            (2.0, 2.1, 0.60),
            ("white", "blue", "gray", "pink", "green"),
            "bed",
            against_wall=True,
            holds=True,
            prior=1.0,
        ),
        Category("cabinet", (0.6, 0.4, 0.8), (1.2, 0.6, 1.2), _WOOD, "box", against_wall=True, holds=True, prior=2.0),
        Category("bookshelf", (0.8, 0.3, 1.6), (1.2, 0.4, 2.0), _WOOD, "shelf", against_wall=True, prior=1.0),
        Category("nightstand", (0.4, 0.4, 0.5), (0.5, 0.5, 0.6), _WOOD, "box", holds=True, prior=1.0),
        Category("trash can", _ROUND[0], _ROUND[1], ("gray", "black", "blue", "green", "white"), "cylinder", prior=2.0),
        Category(
            "refrigerator",
            (0.6, 0.6, 1.6),
            (0.8, 0.7, 1.9),
            ("white", "gray", "black", "red", "blue"),
            "box",
            against_wall=True,
            prior=0.5,
        ),
        Category("plant", _ROUND[0], _ROUND[1], ("green", "yellow", "red", "purple", "orange"), "plant", prior=1.0),
        # Small objects: a few dozen scan vertices each. The categories of a size family share one
        # range of boxes; their parts are what differ (trash cans and plants share one too).
        Category("cup", _VESSEL[0], _VESSEL[1], _DRINKS, "mug", on=_SURFACES, prior=1.5),
        Category("glass", _VESSEL[0], _VESSEL[1], _DRINKS, "glass", on=_SURFACES, prior=1.5),
        Category("can", _VESSEL[0], _VESSEL[1], _DRINKS, "can", on=_SURFACES, prior=1.5),
        Category("bottle", _VESSEL[0], _VESSEL[1], _DRINKS, "bottle", on=_SURFACES, prior=1.5),
        Category("book", _FLAT[0], _FLAT[1], _VIVID, "book", on=_SURFACES, prior=2.0),
        Category("box", _FLAT[0], _FLAT[1], _VIVID, "carton", on=("table", "desk", "cabinet"), prior=1.5),
        Category("keyboard", _FLAT[0], _FLAT[1], _VIVID, "keyboard", on=("desk", "table"), prior=1.2),
        Category(
            "lamp", _ROUND[0], _ROUND[1], _VIVID, "lamp", on=("nightstand", "desk", "table", "cabinet"), prior=1.2
        ),
        Category("pillow", (0.30, 0.22, 0.07), (0.55, 0.40, 0.16), _VIVID, "pillow", on=("bed", "sofa"), prior=1.5),
        Category(
            "monitor",
            (0.34, 0.10, 0.22),
            (0.58, 0.22, 0.42),
            ("black", "gray", "white", "blue", "red"),
            "monitor",
            on=("desk", "table"),
            prior=1.2,
        ),
    ]
}

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
    "cup": ("glass", "bottle", "table"),
    "glass": ("cup", "bottle", "can"),
    "can": ("bottle", "glass"),
    "bottle": ("cup", "glass", "can"),
    "pillow": ("bed", "sofa"),
    "refrigerator": ("bottle", "trash can"),
}


def plural(label: str) -> str:
    if label.endswith("shelf"):
        return label[:-5] + "shelves"
    if label.endswith(("x", "s", "ch")):
        return label + "es"
    return label + "s"
