#include "tasks/retrieval/step.h"

#include "albef/core/error.h"

namespace albef {

StepOutputs retrieval_forward(AlbefModel& model, const at::Tensor& images, const at::Tensor& input_ids,
                              const at::Tensor& attention_mask, double alpha, const at::Tensor& image_ids,
                              bool distill, const StepChoices* injected, const FeatureGather& gather) {
  ALBEF_CHECK(model->options().id_queue && model->options().momentum_encoders,
              "retrieval fine-tuning needs the id queue (retrieval_model_options) and momentum encoders");
  ALBEF_CHECK(image_ids.defined() && image_ids.numel() == images.size(0), "one image id per pair is needed, got ",
              image_ids.defined() ? image_ids.numel() : 0, " for ", images.size(0), " pairs");
  StepOutputs out;
  contrast_and_match(model, images, input_ids, attention_mask, alpha, image_ids, distill, injected, gather, out);
  return out;
}

}  // namespace albef
