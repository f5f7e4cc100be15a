#pragma once
/// @file albef.h
/// @brief The public API of albef-cpp in one include.
///
/// Most programs need only `albef::AlbefInference` (tasks/inference.h):
/// load a config and a checkpoint, then embed or score images and captions.
/// The pieces below it are public too: the config, the tokenizer, the image
/// pipeline, the model modules and the checkpoint reader/writer.

#include "albef/config/config.h"
#include "albef/core/error.h"
#include "albef/core/runtime.h"
#include "albef/data/annotations.h"
#include "albef/data/loader.h"
#include "albef/io/checkpoint.h"
#include "albef/io/npy.h"
#include "albef/model/albef.h"
#include "albef/ops/linear.h"
#include "albef/tasks/inference.h"
#include "albef/tasks/retrieval.h"
#include "albef/tasks/retrieval_eval.h"
#include "albef/text/tokenizer.h"
#include "albef/train/pretrain.h"
#include "albef/train/pretrain_step.h"
#include "albef/vision/augment.h"
#include "albef/vision/image.h"
