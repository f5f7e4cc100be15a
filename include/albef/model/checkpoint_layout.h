#pragma once
/// @file checkpoint_layout.h
/// @brief The official ALBEF layout of a checkpoint and LAVIS's.
///
/// LAVIS (salesforce/LAVIS, lavis/models/albef_models) keeps the official
/// module and parameter names of every ALBEF model. What differs is what its
/// checkpoints hold:
///  - its BERTs (lavis/models/med.py with `add_type_embeddings: false`) have
///    no `embeddings.token_type_embeddings` and add no token-type embedding,
///    where the official BERT adds type 0's row to every token;
///  - its runner saves only the parameters that require gradients, so the
///    momentum encoders' parameters (`*_m.*`) may be absent;
///  - its `config` entry is LAVIS's (`model.arch` = "albef_retrieval", ...).
///
/// Converting official -> LAVIS folds type 0's row into the position
/// embeddings (word + position + type0 = word + (position + type0)), so LAVIS
/// computes the official numbers, and keeps the original two tensors under
/// the top-level entry `albef_official_embeddings`, which LAVIS never reads,
/// so that converting back restores them bit for bit. A LAVIS checkpoint
/// without that entry becomes official with zero token-type embeddings, which
/// again computes what LAVIS computes.

#include "albef/io/checkpoint.h"

#include <string>
#include <vector>

namespace albef {

enum class CheckpointLayout { Official, Lavis };

/// "official" or "lavis".
const char* layout_name(CheckpointLayout layout);

/// The top-level entry where an official -> LAVIS conversion keeps the
/// official embedding tensors.
inline constexpr char kOfficialEmbeddingsEntry[] = "albef_official_embeddings";

/// The state_dict prefixes of the BERT embeddings in `state` (such as
/// "text_encoder.bert.embeddings."), in order of appearance.
std::vector<std::string> bert_embedding_prefixes(const io::StateDict& state);

/// LAVIS when a BERT in `state` lacks its token-type embeddings (and is not
/// SIMLA's, which has a cross-attention in layer 0), or `root`
/// (the whole checkpoint, may be null) holds kOfficialEmbeddingsEntry or a
/// LAVIS config; else official.
CheckpointLayout detect_layout(const io::StateDict& state, const io::PyObjectPtr& root);

/// `state` in the official layout (see file comment); official input is
/// returned as it is. Entries keep their order; a restored token-type
/// embedding follows its position embedding, as in the official state_dict.
/// Tensors are moved, never read, so hollow (lazily loaded) ones stay hollow,
/// except that zero token-type embeddings are made in memory.
io::StateDict to_official_layout(const io::StateDict& state, const io::PyObjectPtr& root);

/// `state` in LAVIS's layout, with the official tensors it replaces in
/// `official_embeddings` (name -> tensor, for kOfficialEmbeddingsEntry).
/// Reads every BERT's position and token-type embeddings.
io::StateDict to_lavis_layout(const io::StateDict& state, io::StateDict& official_embeddings);

/// A momentum module's state_dict name -> its online twin's
/// ("text_encoder_m.x" -> "text_encoder.x"); empty when `name` is not in a
/// momentum module.
std::string online_twin(const std::string& name);

}  // namespace albef
