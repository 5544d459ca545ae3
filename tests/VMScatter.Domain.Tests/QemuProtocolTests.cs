using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using VMScatter.Qemu;
using Xunit;

namespace VMScatter.Domain.Tests;

/// <summary>The parts of the qemu backend that need no QEMU: machine-argument validation and the QMP client's protocol handling.</summary>
public sealed class QemuProtocolTests
{
    private static readonly string Kernel = typeof(QemuProtocolTests).Assembly.Location; // any existing absolute file

    private static string Args(params string[] a) => System.Text.Json.JsonSerializer.Serialize(a);

    [Fact]
    public void Machine_arguments_from_the_wire_are_accepted_only_from_the_allow_list()
    {
        var machine = QemuMachine.ForImage(new GuestImage(Kernel, Kernel), 256L << 20, 1, "tcg", "qemu64", "console=ttyS0 quiet");
        Assert.Equal(machine.Arguments, QemuMachine.Parse(machine.Serialize(), 256L << 20).Arguments);
        var adopted = machine with { MemoryBackendId = "ram0" };
        Assert.Equal("ram0", QemuMachine.Parse(adopted.Serialize(), 256L << 20).MemoryBackendId);
        Assert.Equal("mem0", QemuMachine.Parse(Args("-m", "256M"), 256L << 20).MemoryBackendId);
        Assert.Contains("backend id", Assert.Throws<ArgumentException>(() => QemuMachine.Parse((machine with { MemoryBackendId = "x,mem-path=/etc" }).Serialize(), 256L << 20)).Message);

        // Options that would let a peer make this host's QEMU write files, open sockets or run commands are refused.
        Assert.Contains("not allowed", Assert.Throws<ArgumentException>(() => QemuMachine.Parse(Args("-chardev", "file,id=x,path=/etc/passwd"), 256L << 20)).Message);
        // -machine TYPE,memory-backend=ID only names the RAM backend (QemuDevicesTests); anything more is refused.
        Assert.Contains("not allowed", Assert.Throws<ArgumentException>(() => QemuMachine.Parse(Args("-machine", "pc,memory-backend=evil,mem-path=/etc"), 256L << 20)).Message);
        Assert.Contains("not allowed", Assert.Throws<ArgumentException>(() => QemuMachine.Parse(Args("-accel", "tcg,thread=multi"), 256L << 20)).Message);
        Assert.Contains("existing absolute path", Assert.Throws<ArgumentException>(() => QemuMachine.Parse(Args("-kernel", "relative/vmlinuz"), 256L << 20)).Message);
        Assert.Contains("existing absolute path", Assert.Throws<ArgumentException>(() => QemuMachine.Parse(Args("-initrd", "/nonexistent/initrd"), 256L << 20)).Message);
        Assert.Contains("does not match", Assert.Throws<ArgumentException>(() => QemuMachine.Parse(Args("-m", "512M"), 256L << 20)).Message);
        Assert.Contains("no value", Assert.Throws<ArgumentException>(() => QemuMachine.Parse(Args("-cpu"), 256L << 20)).Message);
        Assert.Contains("JSON argument list", Assert.Throws<ArgumentException>(() => QemuMachine.Parse("-m 256M", 256L << 20)).Message);
    }

    /// <summary>A fake QEMU monitor: greets, accepts capabilities negotiation, then answers by a script.</summary>
    private static async Task ServeAsync(Socket listener, Func<JsonObject, IEnumerable<string>> answer)
    {
        using var client = await listener.AcceptAsync();
        using var stream = new NetworkStream(client);
        using var reader = new StreamReader(stream);
        async Task Send(string line) => await stream.WriteAsync(Encoding.UTF8.GetBytes(line + "\r\n"));
        await Send("""{"QMP": {"version": {"qemu": {"micro": 19, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}""");
        while (await reader.ReadLineAsync() is { } line)
        {
            var request = (JsonObject)JsonNode.Parse(line)!;
            if (request["execute"]!.GetValue<string>() == "qmp_capabilities") { await Send($$"""{"return": {}, "id": "{{request["id"]}}"}"""); continue; }
            foreach (var reply in answer(request)) await Send(reply);
        }
    }

    [Fact]
    public async Task The_qmp_client_negotiates_matches_replies_by_id_reports_errors_and_delivers_events()
    {
        string dir = Directory.CreateTempSubdirectory("vmscatter-qmp-").FullName;
        string path = Path.Combine(dir, "qmp.sock");
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(path));
        listener.Listen(1);
        var server = ServeAsync(listener, request =>
        {
            string id = request["id"]!.GetValue<string>();
            return request["execute"]!.GetValue<string>() switch
            {
                // A stale reply with another id and an event come first: neither may be taken for this command's answer.
                "query-status" => [$$"""{"return": {"status": "paused"}, "id": "stale-1"}""", """{"event": "STOP", "data": {}, "timestamp": {"seconds": 1, "microseconds": 2}}""",
                    $$"""{"return": {"status": "running", "running": true}, "id": "{{id}}"}"""],
                "cont" => [$$"""{"error": {"class": "GenericError", "desc": "migration is not finished"}, "id": "{{id}}"}"""],
                _ => [],
            };
        });
        try
        {
            await using var qmp = await QmpClient.ConnectAsync(path, TimeSpan.FromSeconds(10));
            Assert.Equal("7.2.19", qmp.Version);
            var status = await qmp.ExecuteAsync("query-status");
            Assert.Equal("running", status!["status"]!.GetValue<string>());
            Assert.NotNull(await qmp.WaitForEventAsync("STOP", TimeSpan.FromSeconds(5)));
            var refused = await Assert.ThrowsAsync<QmpException>(() => qmp.ExecuteAsync("cont"));
            Assert.Equal("QEMU refused 'cont': GenericError: migration is not finished", refused.Message);
            // A command QEMU never answers times out with its name, rather than hanging.
            var silent = await Assert.ThrowsAsync<QmpException>(() => qmp.ExecuteAsync("query-migrate", timeout: TimeSpan.FromMilliseconds(200)));
            Assert.Contains("'query-migrate': no answer", silent.Message);
        }
        finally
        {
            listener.Close();
            try { await server; } catch (Exception e) when (e is SocketException or IOException or ObjectDisposedException) { }
            Directory.Delete(dir, recursive: true);
        }
    }
}
