#pragma once

// CAF's side of the logger (runtime/log.hpp), kept out of log.hpp so that
// header stays free of CAF.

#include <caf/fwd.hpp>
#include <caf/result.hpp>

namespace drover {

/// A default handler for unexpected messages: writes a warn record (the
/// actor's name, the message) and drops the message, as
/// caf::print_and_drop does — but through the logger instead of CAF's
/// printer on stdout. `self->set_default_handler(log_and_drop)`.
caf::result<caf::message> log_and_drop(caf::scheduled_actor* self,
                                       caf::message_view& x);

} // namespace drover
