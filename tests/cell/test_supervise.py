"""`llmcell up`'s supervision: what exits is restarted after a back-off that doubles while it keeps
failing and starts again once it has run for a while (real processes that fail at start)."""

from __future__ import annotations

import signal

from llmcell.local_cell import STABLE_AFTER, CellPlan, LocalCell, restart_delay


def test_restart_delay_doubles_up_to_its_cap():
    assert [restart_delay(n) for n in range(8)] == [1, 2, 4, 8, 16, 30, 30, 30]
    assert restart_delay(10_000) == 30


def test_a_process_that_keeps_exiting_is_restarted_later_each_time():
    cell, said = LocalCell(CellPlan()), []
    cell._spawn("bad", ("bad", ("admin", "--port", "not-a-port")))  # argparse: exit status 2
    unit = cell.units[0]
    first = unit.procs[0]
    first.wait(30)
    now = unit.started + 0.5
    cell.supervise(now, said.append)
    assert said == ["bad exited with status 2; restarting bad in 1s"]
    cell.supervise(now + 0.9, said.append)  # its back-off is not over
    assert len(said) == 1 and unit.procs[0] is first
    cell.supervise(now + 1.0, said.append)
    assert said[-1] == "bad: restarted" and unit.procs[0] is not first
    unit.procs[0].wait(30)
    cell.supervise(unit.started + 0.5, said.append)
    assert said[-1] == "bad exited with status 2; restarting bad in 2s"
    cell.supervise(unit.restart_at, said.append)
    unit.procs[0].wait(30)
    cell.supervise(unit.started + 0.5, said.append)
    assert said[-1].endswith("in 4s")
    # a process that ran for a minute before exiting starts the back-off again
    cell.supervise(unit.restart_at, said.append)
    unit.procs[0].wait(30)
    cell.supervise(unit.started + STABLE_AFTER, said.append)
    assert said[-1].endswith("in 1s")
    cell.stop()


def test_a_group_is_stopped_whole_when_one_member_exits(tmp_path):
    cell, said = LocalCell(CellPlan()), []
    leader = cell._spawn("g", ("worker-0-1", ("admin", "--port", "not-a-port")),
                         ("server-0", ("admin", "--port", "0", "--state",
                                       str(tmp_path / "admin.sqlite3"))))
    unit = cell.units[0]
    unit.procs[0].wait(30)
    assert leader.poll() is None  # an admin that serves until told to stop
    cell.supervise(unit.started + 0.5, said.append)
    assert said == ["worker-0-1 exited with status 2; restarting g (the whole group of 2) in 1s"]
    assert leader.returncode in (0, -signal.SIGTERM)  # stopped with its worker
    cell.stop()
