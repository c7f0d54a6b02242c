// Host stand-in for <cuda_fp16.h> (see ../host_emulation.h).
#pragma once
#include "../host_emulation.h"
