// glasscam: insitu command (see insitu_command.h)

#include "insitu_command.h"

#include "hook_args.h"

#include "comm.h"
#include "error.h"
#include "pyhost.h"
#include "update.h"
#include "utils.h"

using namespace LAMMPS_NS;

void InsituCommand::command(int narg, char **arg)
{
  std::string spec;
  glasscam::KeyValues kw;
  glasscam::parse_hook_args(lmp, "insitu", "insitu module:function [key value ...]", narg, arg,
                            spec, kw);
  bigint step = update->ntimestep;
  if (comm->me == 0) utils::logmesg(lmp, "insitu: calling {} at step {}\n", spec, step);

  glasscam::PyHook hook;
  auto outcome = hook.create(lmp, spec, kw);
  glasscam::raise_if_failed_anywhere(lmp, outcome, "insitu " + spec);
  outcome = hook.call(step);
  glasscam::raise_if_failed_anywhere(lmp, outcome, fmt::format("insitu {} at step {}", spec, step));
}
