using System.CommandLine;
using Npgsql;
using VMScatter.Bench.Chaos;
using VMScatter.Cli.View;

namespace VMScatter.Cli.Commands;

/// <summary>`vmscatter chaos`: kill -9 a random node of a multi-process cluster mid-migration, N times, and check the invariants after each run.</summary>
public static class ChaosCommand
{
    private const string TestPostgres = "Host=127.0.0.1;Port=5432;Username=vmscatter;Password=vmscatter;Database=vmscatter_test";

    public static Command Create()
    {
        var runs = new Option<int>("--runs") { Description = "Runs, each a fresh cluster with one node killed", Required = true };
        var json = new Option<string?>("--json") { Description = "Write the summary and every run's counts here" };
        var seed = new Option<long>("--seed") { Description = "Seed of the kills (role, node, moment) and of the guests", DefaultValueFactory = _ => 1 };
        var postgres = new Option<string?>("--postgres") { Description = "The scheduler journal's PostgreSQL (default: $VMSCATTER_TEST_POSTGRES, else the test database ./test.sh starts)" };
        var kill = new Option<ChaosRole[]>("--kill") { Description = "Role killed in each run, in order and cycled (scheduler, source, target; repeatable); default: drawn at random", AllowMultipleArgumentsPerToken = true };
        var targets = new Option<int>("--targets") { Description = "Target hosts per run", DefaultValueFactory = _ => 4 };
        var command = new Command("chaos", "Kill -9 a random node (scheduler, source or target) at a random moment of a migration, restart it, and check that every VM runs exactly once");
        foreach (var o in new Option[] { runs, json, seed, postgres, kill, targets }) command.Options.Add(o);

        command.SetAction(async (parse, cancellationToken) =>
        {
            int count = parse.GetValue(runs);
            if (count < 1) throw new UserError("--runs must be at least 1");
            int targetCount = parse.GetValue(targets);
            if (targetCount is < 2 or > 8) throw new UserError("--targets must be between 2 and 8 (a lost target's VMs need somewhere to go)");
            string? jsonFile = parse.GetValue(json);
            if (jsonFile is not null && Path.GetDirectoryName(Path.GetFullPath(jsonFile)) is { } parent && !Directory.Exists(parent))
                throw new UserError($"--json: directory {parent} does not exist");
            string connection = parse.GetValue(postgres) ?? Environment.GetEnvironmentVariable("VMSCATTER_TEST_POSTGRES") ?? TestPostgres;
            await EnsurePostgresAsync(connection, cancellationToken);

            string work = Directory.CreateTempSubdirectory("vmscatter-chaos-").FullName;
            Console.WriteLine($"chaos: {count} run(s), seed {parse.GetValue(seed)}; logs of failed runs are kept under {work}");
            var summary = await ChaosHarness.RunAsync(new ChaosOptions
            {
                Runs = count, Seed = parse.GetValue(seed), Kills = parse.GetValue(kill) ?? [], Targets = targetCount, PostgresConnectionString = connection, WorkDirectory = work,
                VmscatterDll = Path.Combine(AppContext.BaseDirectory, "vmscatter.dll"), Log = Console.WriteLine,
            }, cancellationToken);
            if (summary.AllInvariantsHeld) Directory.Delete(work, recursive: true);
            Console.WriteLine();
            Console.Write(ChaosTable.Render(summary));
            if (jsonFile is not null) await File.WriteAllTextAsync(jsonFile, summary.ToJson(), cancellationToken);
            return summary.AllInvariantsHeld ? ExitCodes.Success : ExitCodes.MigrationFailed;
        });
        return command;
    }

    /// <summary>The runs share nothing but the journal: without a reachable PostgreSQL there is no failover to test.</summary>
    private static async Task EnsurePostgresAsync(string connection, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(TimeSpan.FromSeconds(10));
        try
        {
            await using var c = new NpgsqlConnection(connection);
            await c.OpenAsync(timeout.Token);
        }
        catch (Exception e) when (e is NpgsqlException or ArgumentException or InvalidOperationException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
        {
            throw new UserError($"no PostgreSQL journal at '{connection}' ({e.GetBaseException().Message.Split('\n')[0]}); start one with 'deploy/postgres-journal.sh vmscatter vmscatter vmscatter_test' (as root; ./test.sh does it) or pass --postgres CONNSTRING");
        }
    }
}
