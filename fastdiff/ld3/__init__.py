"""LD3: learn the step schedule of a fast ODE solver for a given model (Tong et al. 2024, arXiv 2405.15506).

schedule = fastdiff.ld3.learn_sigmas(denoiser, "ipndm", 4, shape=(3, 32, 32), teacher_solver="heun", teacher_nfe=200)
schedule.save("ipndm_nfe4.json")
x0 = fastdiff.sample(denoiser, torch.randn(16, 3, 32, 32) * schedule.sigma_max, schedule, "ipndm")
"""

from fastdiff.ld3.schedule import LearnedSchedule
from fastdiff.ld3.solvers import learnable_solvers, steps_for_nfe
from fastdiff.ld3.train import learn_sigmas

__all__ = ["LearnedSchedule", "learn_sigmas", "learnable_solvers", "steps_for_nfe"]
