// glasscam: arguments of the insitu styles (see hook_args.h)

#include "hook_args.h"

#include "error.h"
#include "lammps.h"
#include "utils.h"

#include <set>

using namespace LAMMPS_NS;

namespace glasscam {

bool is_valid_utf8(const std::string &text)
{
  const auto *s = reinterpret_cast<const unsigned char *>(text.data());
  const std::size_t n = text.size();
  std::size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    int len;
    unsigned char lo = 0x80, hi = 0xBF;    // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF)
      len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;    // no overlong forms
      if (c == 0xED) hi = 0x9F;    // no UTF-16 surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;    // no overlong forms
      if (c == 0xF4) hi = 0x8F;    // nothing above U+10FFFF
    } else
      return false;    // continuation byte, overlong lead byte (C0, C1) or F5..FF
    if (i + len > n) return false;
    if (s[i + 1] < lo || s[i + 1] > hi) return false;
    for (int k = 2; k < len; ++k)
      if (s[i + k] < 0x80 || s[i + k] > 0xBF) return false;
    i += len;
  }
  return true;
}

std::string escape_bytes(const std::string &text)
{
  static const char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c >= 0x20 && c < 0x7F) {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 0xF];
    }
  }
  return out;
}

void parse_hook_args(LAMMPS *lmp, const std::string &what, const char *usage, int narg,
                     char **arg, std::string &spec, KeyValues &kw)
{
  Error *error = lmp->error;
  if (narg < 1)
    error->all(FLERR, "Illegal {} command: missing module:function ({})", what, usage);

  // Python gets str objects: refuse bytes that are not UTF-8 here, on every rank alike,
  // before anything reaches the interpreter
  for (int i = 0; i < narg; ++i) {
    if (is_valid_utf8(arg[i])) continue;
    std::string role;
    if (i == 0)
      role = "module:function";
    else if (i % 2 == 1)
      role = "keyword";
    else
      role = fmt::format("value of keyword '{}'", escape_bytes(arg[i - 1]));
    error->all(FLERR,
               "Illegal {} command: {} is not valid UTF-8: '{}' (hook arguments are passed to "
               "Python as str)",
               what, role, escape_bytes(arg[i]));
  }

  spec = arg[0];
  auto colon = spec.find(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == spec.size() ||
      spec.find(':', colon + 1) != std::string::npos)
    error->all(FLERR, "Illegal {} command: expected module:function, got '{}' ({})", what, spec,
               usage);
  if ((narg - 1) % 2 != 0)
    error->all(FLERR, "Illegal {} command: keyword '{}' has no value ({})", what, arg[narg - 1],
               usage);
  std::set<std::string> seen;
  for (int i = 1; i < narg; i += 2) {
    if (!seen.insert(arg[i]).second)
      error->all(FLERR, "Illegal {} command: keyword '{}' given twice", what, arg[i]);
    kw.emplace_back(arg[i], arg[i + 1]);
  }
}

}    // namespace glasscam
