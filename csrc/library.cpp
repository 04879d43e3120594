// The `fastconv` operator namespace; the schemas are in csrc/schema_table.h.
#include <torch/library.h>

#include "schema_table.h"

TORCH_LIBRARY(fastconv, m) { fastconv::define_ops(m); }
