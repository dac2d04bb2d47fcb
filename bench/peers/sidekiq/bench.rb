# Sidekiq peer: ruby bench.rb preload|worker|submit [options]
#   env REDIS_URL: unix:///path/to/redis.sock (the private Redis)
#   preload --jobs N [--chunk 1000]   Sidekiq::Client.push_bulk in chunks of 1,000
#                                     (Sidekiq's bulk API and its advised chunk size)
#   worker --jobs N --concurrency C [--mode B1|B3]
#          the Sidekiq server (Sidekiq::CLI, queue "default"), held in its
#          :startup hook until the driver writes GO (READY/GO handshake)
#   submit --jobs N [--interval-ms 10]  B3: one push at a time, args [{"t" => wall ms}]
require_relative "jobs"

def arg(name, default)
  i = ARGV.index("--#{name}")
  i ? ARGV[i + 1] : default
end

cmd = ARGV[0]
case cmd
when "preload"
  jobs = Integer(arg("jobs", 100_000))
  chunk = Integer(arg("chunk", 1000))
  i = 0
  while i < jobs
    n = [chunk, jobs - i].min
    Sidekiq::Client.push_bulk("class" => NoopJob, "args" => Array.new(n) { |k| [i + k] })
    i += n
  end
when "worker"
  require "sidekiq/cli"
  jobs = Integer(arg("jobs", 100_000))
  conc = Integer(arg("concurrency", 10))
  mode = arg("mode", "B1")
  Sidekiq.configure_server do |config|
    config.server_middleware { |chain| chain.add DroverBench::CountMiddleware }
    config.on(:startup) do
      DroverBench.counter = DroverBench::Counter.new(jobs, mode)
      $stdout.puts "READY"
      line = $stdin.gets
      abort "stdin closed before GO" unless line&.include?("GO")
    end
  end
  cli = Sidekiq::CLI.instance
  cli.parse(["-r", File.expand_path("jobs.rb", __dir__), "-c", conc.to_s, "-q", "default", "-t", "5"])
  Sidekiq.logger = Sidekiq::Logger.new($stderr)
  Sidekiq.logger.level = Logger::WARN
  cli.run
when "submit"
  jobs = Integer(arg("jobs", 200))
  interval = Integer(arg("interval-ms", 10)) / 1000.0
  jobs.times do
    NoopJob.perform_async({ "t" => DroverBench.wall_ms })
    sleep interval
  end
else
  warn "usage: ruby bench.rb preload|worker|submit [options]"
  exit 2
end
