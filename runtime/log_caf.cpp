#include "runtime/log_caf.hpp"

#include "runtime/log.hpp"

#include <caf/deep_to_string.hpp>
#include <caf/message_view.hpp>
#include <caf/scheduled_actor.hpp>
#include <caf/sec.hpp>

namespace drover {

caf::result<caf::message> log_and_drop(caf::scheduled_actor* self,
                                       caf::message_view& x) {
  log::warn(self->name(), "unexpected message dropped",
            {{"message", caf::deep_to_string(x.content())},
             {"actor_id", self->id()}});
  return caf::sec::unexpected_message;
}

} // namespace drover
