/// @file baukit/distributed.hpp
/// @brief Jobs of many processes, on one machine or many, through torch.distributed's c10d:
/// `distributed/environment.hpp` (rank and rendezvous from torchrun's, Slurm's or Open MPI's variables),
/// `distributed/process_group.hpp` (the rendezvous, Gloo's collectives and `reduce` of a statistic),
/// `distributed/tally.hpp` (`tally` over a job) and `distributed/launch.hpp` (a job on this machine, as `--nproc`).
/// Not in `baukit.hpp`: c10d's headers are large, and a program of one process needs none of them.
#pragma once

#include <baukit/distributed/environment.hpp>
#include <baukit/distributed/launch.hpp>
#include <baukit/distributed/process_group.hpp>
#include <baukit/distributed/tally.hpp>
