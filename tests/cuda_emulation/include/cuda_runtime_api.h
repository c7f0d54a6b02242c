// Host stand-in for <cuda_runtime_api.h> (see ../host_emulation.h).
#pragma once
#include "../host_emulation.h"
