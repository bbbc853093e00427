/* glasscam: insitu module:function [key value ...]
 *
 * Calls the Python function `function(lmp, step, **kw)` once, now, on every
 * rank of the partition (step = current timestep).
 */
#ifndef GLASSCAM_INSITU_COMMAND_H
#define GLASSCAM_INSITU_COMMAND_H

#include "command.h"

namespace LAMMPS_NS {

class InsituCommand : public Command {
 public:
  InsituCommand(class LAMMPS *lmp) : Command(lmp) {}
  void command(int, char **) override;
};

}    // namespace LAMMPS_NS

#endif
