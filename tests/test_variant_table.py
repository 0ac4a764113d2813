"""The variant table is where each model file is named (issue 9): what the loader,
the file check, setup and cleanup read."""
from __future__ import annotations


def test_each_part_file_is_a_required_file_and_named_once():
    """Issue 9: weight file names live in the variant table only; the loader reads the
    part files and the tokenizer file from it."""
    from cbx.engine import fastload
    from cbx.variants import VARIANTS

    for name, spec in VARIANTS.items():
        assert set(spec.part_files) == {attr for attr, _strict in fastload.RECIPES[name]}
        assert set(spec.part_files.values()) <= set(spec.required_files), name
        if spec.tokenizer_file is not None:
            assert spec.tokenizer_file in spec.required_files, name
