// The pretext family's CPU kernels.
#include "pretext/pretext.h"
