"""``--db`` directories: made when missing, shared by workers that start at once, refused when unusable."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernelforge import cli, cli_common


def test_a_database_folder_another_worker_makes_first_is_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "db"
    real = Path.mkdir

    def racing(self: Path, *args: object, **kwargs: object) -> None:
        real(self, parents=True)  # the other worker of the study wins the race
        raise FileExistsError(17, "File exists", str(self))

    monkeypatch.setattr(Path, "mkdir", racing)
    assert cli_common.db_folder(str(target), create=True) == target


def test_a_missing_folder_is_made_for_writing_and_refused_for_reading(tmp_path: Path) -> None:
    with pytest.raises(cli.UsageError, match="no such directory"):
        cli_common.db_folder(str(tmp_path / "absent"), create=False)
    assert cli_common.db_folder(str(tmp_path / "new" / "db"), create=True).is_dir()
    (tmp_path / "file").write_text("")
    with pytest.raises(cli.UsageError, match="not a directory"):
        cli_common.db_folder(str(tmp_path / "file"), create=True)
