"""The pydantic types refuse every manifest of the invalid corpus the API server refuses.

The operator validates again what the API server admitted (an older CRD may still be installed), so
both must agree; tests/integration/test_invalid_corpus.py is the API server's half.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from arbiter.api import parse_spec
from invalid_corpus import InvalidCase, all_cases


@pytest.mark.parametrize("case", all_cases(), ids=lambda c: c.id)
def test_pydantic_refuses_the_case(case: InvalidCase) -> None:
    with pytest.raises(ValidationError):
        parse_spec(case.manifest["spec"])
