// The word2vec family's CPU kernels.
#include "word2vec/word2vec.h"
