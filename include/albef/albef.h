#pragma once
/// @file albef.h
/// @brief The public API of albef-cpp in one include.
///
/// Most programs need only `albef::AlbefInference` (api/inference.h): load a
/// config and a checkpoint, then embed or score images and captions. Below
/// it: the config, the tokenizer, the image pipeline, the model (backbone and
/// heads), checkpoints, training, the tasks, gallery search and the
/// data-parallel process group. Everything else (kernels, the training
/// step's pieces, the task registry) is internal to src/.

#include "albef/api/inference.h"
#include "albef/config/config.h"
#include "albef/core/error.h"
#include "albef/core/runtime.h"
#include "albef/data/annotations.h"
#include "albef/data/loader.h"
#include "albef/distributed/process_group.h"
#include "albef/io/checkpoint.h"
#include "albef/io/npy.h"
#include "albef/model/albef.h"
#include "albef/model/checkpoint_layout.h"
#include "albef/model/itm.h"
#include "albef/serve/gallery.h"
#include "albef/serve/image_index.h"
#include "albef/tasks/classification.h"
#include "albef/tasks/grounding.h"
#include "albef/tasks/nlvr.h"
#include "albef/tasks/pretrain.h"
#include "albef/tasks/retrieval.h"
#include "albef/tasks/ve.h"
#include "albef/tasks/vqa.h"
#include "albef/text/tokenizer.h"
#include "albef/train/trainer.h"
#include "albef/vision/augment.h"
#include "albef/vision/image.h"
