// Host stand-in for <cuda_runtime.h> (see ../host_emulation.h).
#pragma once
#include "../host_emulation.h"
