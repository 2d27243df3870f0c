// The colour family's CPU kernels.
#include "colour/colour.h"
