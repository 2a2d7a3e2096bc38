import pytest

from cl3dor_ray.text.normalize import NORMALIZER_VERSION, normalize_answer


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("The Brown Table.", "brown table"),
        ("two", "2"),
        ("an  orange, cup!", "orange cup"),
        ("Café", "café"),
        ("on the left side", "on left side"),
        ("Nineteen", "19"),
        ("twenty-three chairs", "23 chairs"),
        ("letf of the rigth door", "left of right door"),
        ("no1", "no"),
        ("1st", "1st"),  # only a digit after a word goes
    ],
)
def test_normalize(raw, expected):
    assert normalize_answer(raw) == expected


def test_version_is_named():
    assert NORMALIZER_VERSION.endswith("v2")
