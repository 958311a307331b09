"""Studies: a YAML grid of mixtures, run cell by cell into content-addressed folders."""

from knowpack.study.grid import Cell, expand_grid
from knowpack.study.plan import load_study, parse_study, preflight
from knowpack.study.runner import Stages, StudyRun, run_study
from knowpack.study.spec import Study

__all__ = ["Cell", "Stages", "Study", "StudyRun", "expand_grid", "load_study", "parse_study", "preflight", "run_study"]
