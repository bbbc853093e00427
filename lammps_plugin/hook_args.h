/* glasscam: the `module:function [key value ...]` arguments shared by `fix insitu` and the
 * `insitu` command.
 */
#ifndef GLASSCAM_HOOK_ARGS_H
#define GLASSCAM_HOOK_ARGS_H

#include "pyhost.h"    // KeyValues

#include <string>

namespace LAMMPS_NS {
class LAMMPS;
}

namespace glasscam {

// Parse `module:function [key value ...]` (narg words from arg) into spec and kw.
// `what` names the style in error messages ("fix insitu", "insitu"), `usage` is its syntax.
// Every word must be valid UTF-8 (Python receives str): anything else, a malformed spec, a
// keyword without value or a repeated keyword is a LAMMPS error (error->all: every rank
// parses the same deck).
void parse_hook_args(LAMMPS_NS::LAMMPS *lmp, const std::string &what, const char *usage, int narg,
                     char **arg, std::string &spec, KeyValues &kw);

// True if `text` is well-formed UTF-8 in the sense of Python's strict decoder (no overlong
// forms, no surrogates U+D800..U+DFFF, nothing above U+10FFFF).
bool is_valid_utf8(const std::string &text);

// `text` for an error message: printable ASCII kept, every other byte as \xNN.
std::string escape_bytes(const std::string &text);

}    // namespace glasscam

#endif
