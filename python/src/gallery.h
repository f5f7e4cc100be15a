#pragma once
// albef.Gallery: an image index written by `albef index`, searched with
// features (faiss's convention) or, through Model.search, with captions.

#include "albef/serve/image_index.h"

#include <memory>
#include <string>

namespace albef::python {

class Gallery {
 public:
  explicit Gallery(const std::string& path);
  const serve::ImageIndex& index() const { return *index_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::shared_ptr<serve::ImageIndex> index_;
};

}  // namespace albef::python
