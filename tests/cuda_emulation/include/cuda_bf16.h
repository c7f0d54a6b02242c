// Host stand-in for <cuda_bf16.h> (see ../host_emulation.h).
#pragma once
#include "../host_emulation.h"
