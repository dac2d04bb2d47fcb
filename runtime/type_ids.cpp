#include "runtime/type_ids.hpp"

#include "runtime/errors.hpp"

#include <caf/actor_system_config.hpp>

namespace drover {

void register_types(caf::actor_system_config& cfg) {
  cfg.add_message_types<caf::id_block::drover>();
  register_error_category(cfg);
}

} // namespace drover
