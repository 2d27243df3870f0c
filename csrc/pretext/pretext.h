// The pretext family: declarations shared by its kernels and the bindings.
#pragma once
#include "pyssl/common.h"
