"""dalle.progress: a bar over a job's named stages."""

import pytest

from dalle.progress import Stages


def test_stages_advance_in_order_and_complete(capsys):
    with Stages("convert", ("read", "convert", "write"), enabled=True) as stages:
        stages.start("read")
        assert stages.completed == 0
        stages.start("write")  # "convert" skipped: the bar jumps ahead
        assert stages.completed == 2
        with pytest.raises(ValueError, match="already started"):
            stages.start("convert")
        with pytest.raises(ValueError, match="unknown stage 'upload'"):
            stages.start("upload")
    assert stages.completed == 3
    err = capsys.readouterr().err
    assert "convert: 3/3 stages" in err and "done" in err


def test_a_failed_job_does_not_show_complete(capsys):
    with pytest.raises(RuntimeError):
        with Stages("convert", ("read", "write"), enabled=True) as stages:
            stages.start("read")
            raise RuntimeError("disk full")
    assert stages.completed == 0
    assert "2/2" not in capsys.readouterr().err


def test_disabled_bar_prints_nothing(capsys):
    with Stages("convert", ("read",), enabled=False) as stages:
        stages.start("read")
    with Stages("convert", ("read",)) as stages:  # the default: only on a terminal, which captured stderr is not
        stages.start("read")
    assert capsys.readouterr().err == ""
