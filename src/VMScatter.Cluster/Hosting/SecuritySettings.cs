using Akka.Configuration;

namespace VMScatter.Cluster.Hosting;

/// <summary>
/// vmscatter.security: the node's PKCS#12 certificate for the control plane's mutual TLS. Empty path: no TLS
/// (akka.tcp, as before). Set: Akka.Remote runs over TLS (akka.ssl.tcp) and accepts only peers whose certificate
/// chains to the CA bundled in this .pfx (see <see cref="ControlPlaneTls"/>).
/// </summary>
public sealed record SecuritySettings(string? CertificatePath, string CertificatePassword)
{
    public bool TlsEnabled => CertificatePath is not null;

    public static SecuritySettings From(Config config)
    {
        string path = config.GetString("vmscatter.security.certificate", "");
        return new SecuritySettings(path.Length == 0 ? null : path, config.GetString("vmscatter.security.certificate-password", ""));
    }
}
