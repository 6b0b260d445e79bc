"""tools/train.py end to end on the toy scenes: train 2 iterations, resume to 4."""
from algorithm_table import tiny_config
from helpers import logged_steps, run_train


def test_train_two_iterations_then_resume_to_four(toy_root, tmp_path):
    work_dir = tmp_path / 'work'
    first = tmp_path / 'first.py'
    tiny_config('DINO', toy_root, max_iters=2).dump(str(first))
    run_train(str(first), str(work_dir))
    assert (work_dir / 'iter_2.pth').exists()

    second = tmp_path / 'second.py'
    tiny_config('DINO', toy_root, max_iters=4).dump(str(second))
    log = run_train(str(second), str(work_dir), '--resume')
    assert 'resumed epoch: 0, iter: 2' in log.lower() or 'resumed' in log.lower(), log[-2000:]
    assert (work_dir / 'iter_4.pth').exists()
    assert logged_steps(work_dir)[-2:] == [[1, 2], [3, 4]]

    import torch
    ckpt = torch.load(work_dir / 'iter_4.pth', map_location='cpu')  # safe loading
    assert ckpt['meta']['iter'] == 4
    assert int(ckpt['state_dict']['teacher.steps']) == 4


