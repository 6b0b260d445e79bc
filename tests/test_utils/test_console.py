"""mmdense.utils.console: step lines with progress bars, programs' output kept in log files."""
import io
import sys

import pytest

from mmdense.utils.console import StepLine, run_logged, training_progress


def test_training_progress_reads_mmengine_log_lines():
    # as MMEngine's LogProcessor writes them (epoch- and iteration-based loops)
    epoch_line = ('12/06 15:50:01 - mmengine - INFO - Epoch(train)  [3][ 5/18]  base_lr: '
                  '2.0e-01 lr: 1.9e-01  eta: 0:00:20  time: 0.3000  loss: 4.1000')
    iter_line = ('12/06 15:51:01 - mmengine - INFO - Iter(train) [ 40/100]  lr: 1.0e-03  '
                 'eta: 0:00:10  time: 0.5000  loss: 1.2000')
    # epoch 3, iteration 5 of 18 per epoch, 6 epochs: 2 * 18 + 5 of 6 * 18
    assert training_progress(epoch_line, max_epochs=6) == (41, 108)
    assert training_progress(epoch_line) == (5, 18)
    assert training_progress(iter_line) == (40, 100)
    assert training_progress('12/06 15:50:01 - mmengine - INFO - Checkpoints will be saved') \
        is None


class Terminal(io.StringIO):

    def isatty(self):
        return True


def test_step_line_is_one_line_off_a_terminal_and_redrawn_on_one():
    piped = io.StringIO()
    step = StepLine('1/2 pretraining', stream=piped)
    step.update(5, 10)
    step.update(10)
    step.finish('3 s wall, 5 s CPU')
    assert piped.getvalue() == '[demo] 1/2 pretraining: 3 s wall, 5 s CPU\n'

    terminal = Terminal()
    step = StepLine('1/2 pretraining', stream=terminal, width=10, min_interval=0)
    step.update(5, 10)
    assert terminal.getvalue().startswith('\r[demo] 1/2 pretraining  [#####-----] 5/10')
    step.finish('done')
    screen = terminal.getvalue()
    assert screen.count('\n') == 1 and screen.endswith('\n')
    # what the terminal shows at the end: the last redraw, the bar blanked out
    assert screen.rsplit('\r', 1)[1].rstrip() == '[demo] 1/2 pretraining: done'


def test_run_logged_keeps_the_output_in_the_log_and_names_it_on_failure(tmp_path, capfd):
    log = tmp_path / 'run' / 'console.log'
    seen = []
    program = 'import sys\nprint("one")\nprint("two", file=sys.stderr)\nprint("three")'
    run_logged([sys.executable, '-c', program], str(log), seen.append, poll_s=0.01)
    # every line, as written (stdout and stderr buffer differently: the order may vary)
    assert sorted(seen) == sorted(log.read_text().split()) == ['one', 'three', 'two']
    assert capfd.readouterr() == ('', '')  # nothing reached the console
    failing = 'print("about to fail")\nraise SystemExit(3)'
    with pytest.raises(RuntimeError, match=r'exited with 3; its log is .*console\.log'
                                           r', ending:\nabout to fail'):
        run_logged([sys.executable, '-c', failing], str(log), poll_s=0.01)
