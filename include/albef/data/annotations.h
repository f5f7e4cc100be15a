#pragma once
/// @file annotations.h
/// @brief ALBEF's JSON annotation files: pretraining, retrieval train and
/// retrieval eval (`dataset/caption_dataset.py`).
///
/// Formats (each file is a JSON list of objects; other keys are ignored):
///  - pretraining (`pretrain_dataset`): `{"image": path, "caption": str or
///    [str, ...]}`, several files concatenated in order;
///  - retrieval train (`re_train_dataset`): `{"image": path, "caption": str,
///    "image_id": str or number}`, several files concatenated; image ids get
///    contiguous indices in order of first appearance. Unlike the official
///    class, a list caption is accepted and expanded into one sample per
///    caption, in order (so a file in the eval format, such as the bundled
///    data/coco-by/captions.json, can be trained on);
///  - retrieval eval (`re_eval_dataset`): `{"image": path, "caption": [str,
///    ...]}`, one file. A plain string caption counts as a list of one (the
///    official loop would iterate over its characters).
///
/// Image paths: the official code opens `image` (pretraining) or
/// `os.path.join(image_root, image)` (retrieval) relative to the working
/// directory. Here, when such a relative path does not exist there, it is
/// tried relative to the annotation file's folder, so an annotation file
/// whose paths are relative to itself (data/coco-by/captions.json has
/// "images/x.jpg") works from anywhere. The lookup happens when the image is
/// opened (see resolve_image_path), not when the file is loaded, so loading
/// millions of entries does not touch the file system.
///
/// Files are parsed entry by entry (one entry in memory at a time). Anything
/// malformed is an albef::Error naming the file and the entry index and key:
/// an empty file, invalid JSON, a top level that is not a list, an empty
/// list, an entry that is not an object, a missing or non-string "image", a
/// missing "caption", a caption that is neither a string nor a non-empty list
/// of strings, a missing "image_id" or one that is neither a string nor a
/// number (retrieval train).

#include <cstdint>
#include <string>
#include <vector>

namespace albef::data {

/// Python's `os.path.join(root, path)`: `path` when it is absolute or `root`
/// is empty, else `root` and `path` joined by one '/' (none added when
/// `root` already ends with '/').
std::string join_path(const std::string& root, const std::string& path);

/// Where an image named by `annotation_file` is opened: `path` itself when it
/// is absolute or exists (relative to the working directory, as the official
/// code), else `<folder of annotation_file>/path` when that exists, else
/// `path` unchanged (opening it then reports it missing).
std::string resolve_image_path(const std::string& path, const std::string& annotation_file);

/// Lines of a text file (one item per line; blank lines skipped). Errors name the file.
std::vector<std::string> read_lines(const std::string& path);

/// Image paths from a list file (relative entries resolved against the list's
/// folder when they do not exist as given) or from a folder (its image files,
/// sorted by name).
std::vector<std::string> image_paths_from(const std::string& list_or_dir);

/// One training sample.
struct TrainSample {
  /// The image as the official code opens it: `image` (pretraining) or
  /// `join_path(image_root, image)` (retrieval).
  std::string image;
  /// The captions as written (not yet cleaned): one, or several of which the
  /// loader draws one per epoch.
  std::vector<std::string> captions;
  /// Retrieval: the contiguous index of the entry's image_id; -1 for
  /// pretraining.
  int64_t image_idx = -1;
  /// Index of the annotation file it came from in TrainDataset::annotation_files.
  uint32_t file = 0;
};

/// The samples of a pretraining or retrieval-train annotation set.
struct TrainDataset {
  std::vector<std::string> annotation_files;
  std::vector<TrainSample> samples;
  /// Retrieval: the number of distinct image ids (image_idx runs over [0,
  /// num_images)); 0 for pretraining.
  int64_t num_images = 0;

  int64_t size() const { return static_cast<int64_t>(samples.size()); }
  /// The file to open for sample `index` (resolve_image_path).
  std::string image_path(int64_t index) const;
};

/// `pretrain_dataset(ann_files)`: every entry of every file, in order.
TrainDataset load_pretrain_dataset(const std::vector<std::string>& annotation_files);

/// `re_train_dataset(ann_files, image_root)`: every entry of every file, in
/// order, a list caption expanded into one sample per caption.
TrainDataset load_retrieval_train_dataset(const std::vector<std::string>& annotation_files,
                                          const std::string& image_root);

/// `re_eval_dataset(ann_file, image_root, max_words)`: the members the
/// official class builds, indexed the same way.
struct RetrievalEvalDataset {
  std::string annotation_file;
  std::string image_root;
  /// `ann['image']` of each entry, as written (official `self.image`).
  std::vector<std::string> image;
  /// Every caption of every entry, in order, through pre_caption(c, max_words).
  std::vector<std::string> text;
  /// The image of each text.
  std::vector<int64_t> txt2img;
  /// The texts of each image, in order.
  std::vector<std::vector<int64_t>> img2txt;

  int64_t num_images() const { return static_cast<int64_t>(image.size()); }
  int64_t num_texts() const { return static_cast<int64_t>(text.size()); }
  /// The file to open for image `index`: join_path(image_root, image[index]),
  /// resolved with resolve_image_path.
  std::string image_path(int64_t index) const;
  /// image_path of every image, in order.
  std::vector<std::string> image_paths() const;
};

/// Loads a retrieval eval (val/test) annotation file.
RetrievalEvalDataset load_retrieval_eval_dataset(const std::string& annotation_file,
                                                 const std::string& image_root, int max_words = 30);

}  // namespace albef::data
