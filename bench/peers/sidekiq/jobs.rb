# The Sidekiq job and the counting middleware of bench/peers (loaded by the
# Sidekiq server through `-r`, and by bench.rb).
require "sidekiq"

$stdout.sync = true
# Debian pairs Sidekiq 6.4 with redis-rb 4.8, which warns (on stderr, at every
# BRPOP) about calls Sidekiq 6.4 makes: keep the warnings out of the timing.
Redis.silence_deprecations = true if Redis.respond_to?(:silence_deprecations=)
Sidekiq.logger = Sidekiq::Logger.new($stderr)
Sidekiq.logger.level = Logger::WARN

module DroverBench
  def self.wall_ms
    Process.clock_gettime(Process::CLOCK_REALTIME, :float_millisecond)
  end

  # Handler count; PROGRESS once a second, DONE at the target, LAT (B3).
  class Counter
    def initialize(target, mode)
      @target = target
      @mode = mode
      @n = 0
      @lats = []
      @lock = Mutex.new
      Thread.new do
        loop do
          sleep 1
          $stdout.puts "PROGRESS #{@lock.synchronize { @n }}"
        end
      end
    end

    def started(t)
      return unless @mode == "B3" && t
      lat = DroverBench.wall_ms - t
      @lock.synchronize { @lats << lat }
    end

    def hit
      n = @lock.synchronize { @n += 1 }
      return unless n == @target
      $stdout.puts "LAT #{@lats.inspect}" if @mode == "B3"
      $stdout.puts format("DONE %d %.3f", n, DroverBench.wall_ms)
    end
  end

  class << self
    attr_accessor :counter
  end

  # Counts a job once Sidekiq's processor has run it to the end.
  class CountMiddleware
    def call(_worker, _job, _queue)
      yield
      DroverBench.counter&.hit
    end
  end
end

class NoopJob
  include Sidekiq::Worker

  def perform(*args)
    t = args[0]
    DroverBench.counter&.started(t.is_a?(Hash) ? t["t"] : nil)
  end
end
