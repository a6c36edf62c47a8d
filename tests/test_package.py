"""The public API: everything in cohort.__all__ exists, the list is sorted and complete."""

import subprocess
import sys

import cohort
from cohort import errors


def test_all_names_exist_and_are_sorted():
    assert cohort.__all__ == sorted(cohort.__all__)
    for name in cohort.__all__:
        assert getattr(cohort, name) is not None, name


def test_every_exception_is_exported_and_derives_from_the_base():
    classes = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, Exception)]
    assert len(classes) > 5
    for cls in classes:
        assert issubclass(cls, cohort.CohortError)
        assert cls.__name__ in cohort.__all__, f"{cls.__name__} is not exported"


def test_manifest_names_are_lazy():
    code = "import sys, cohort; assert 'cohort.manifest' not in sys.modules; cohort.write_manifest; assert 'cohort.manifest' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
