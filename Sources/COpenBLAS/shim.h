// No stable API: this header only feeds the Tensor module.
#include <cblas.h>
