"""Every pass run by a test in this directory is checked for Relax well-formedness."""

import pytest
import tvm

from tvm_onednn.passes import WellFormedCheck


@pytest.fixture(autouse=True)
def well_formed_check():
    """Run the test under a PassContext whose instrument checks every pass's output.

    The instrument is yielded, so a test can see which passes it checked.
    """
    check = WellFormedCheck()
    with tvm.transform.PassContext(instruments=[check]):
        yield check
