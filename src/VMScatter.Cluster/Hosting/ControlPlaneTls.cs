using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Akka.Actor;
using Akka.Actor.Setup;
using Akka.Configuration;
using Akka.Event;
using Akka.Remote.Transport.DotNetty;

namespace VMScatter.Cluster.Hosting;

/// <summary>
/// The control plane (Akka.Remote's DotNetty TCP transport) over TLS with mutual certificate authentication.
/// Akka 1.5.73 does the handshake: enable-ssl, require-mutual-authentication (the server asks for the client's
/// certificate, the client presents its own) and a <see cref="DotNettySslSetup"/> whose custom validator replaces
/// Akka's chain check against the system store. Ours checks, on both ends of every link, that the peer's certificate
/// chains to the cluster CA (the CA certificate bundled in the node's .pfx, never the system store) and is valid for
/// both serverAuth and clientAuth. Hostnames are not checked: membership in the cluster CA is the identity.
/// </summary>
public static class ControlPlaneTls
{
    private static readonly Oid ServerAuth = new("1.3.6.1.5.5.7.3.1");
    private static readonly Oid ClientAuth = new("1.3.6.1.5.5.7.3.2");

    /// <summary>The system's setup: <paramref name="config"/>, with TLS on if vmscatter.security.certificate is set.</summary>
    public static ActorSystemSetup Setup(Config config)
    {
        var security = SecuritySettings.From(config);
        if (!security.TlsEnabled) return ActorSystemSetup.Create(BootstrapSetup.Create().WithConfig(config));
        var (certificate, authorities) = Load(security);
        // suppress-validation stays off; Akka's HOCON certificate path stays empty (the setup carries the certificate).
        var tls = ConfigurationFactory.ParseString("""
            akka.remote.dot-netty.tcp.enable-ssl = on
            akka.remote.dot-netty.tcp.ssl.suppress-validation = off
            akka.remote.dot-netty.tcp.ssl.require-mutual-authentication = on
            akka.remote.dot-netty.tcp.ssl.certificate.path = ""
            """);
        return BootstrapSetup.Create().WithConfig(tls.WithFallback(config))
            .And(new DotNettySslSetup(certificate, suppressValidation: false, requireMutualAuthentication: true, validateCertificateHostname: false,
                customValidator: (peer, _, remote, _, log) =>
                {
                    if (peer is null) { log.Warning("TLS: refused {0}: it presented no certificate", remote); return false; }
                    if (Refusal(peer, authorities) is not { } why) return true;
                    log.Warning("TLS: refused {0}: certificate {1} (issuer {2}): {3}", remote, peer.Subject, peer.Issuer, why);
                    return false;
                }));
    }

    /// <summary>Why <paramref name="certificate"/> is no cluster member's (null: it is): chain to <paramref name="authorities"/>, both EKUs.</summary>
    public static string? Refusal(X509Certificate2 certificate, X509Certificate2Collection authorities)
    {
        // A chain's policy check passes a certificate with no EKU at all (valid for any use), a CA's among them: a node's
        // certificate must be an end entity that names both uses.
        if (IsAuthority(certificate)) return "it is a CA certificate, not a node's";
        var usages = certificate.Extensions.OfType<X509EnhancedKeyUsageExtension>().SelectMany(e => e.EnhancedKeyUsages.Cast<Oid>()).Select(o => o.Value).ToHashSet();
        if (!usages.Contains(ServerAuth.Value) || !usages.Contains(ClientAuth.Value)) return "its extended key usage does not name both serverAuth and clientAuth";
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(authorities);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.DisableCertificateDownloads = true;
        chain.ChainPolicy.ApplicationPolicy.Add(ServerAuth);
        chain.ChainPolicy.ApplicationPolicy.Add(ClientAuth);
        bool ok = chain.Build(certificate);
        string why = string.Join("; ", chain.ChainStatus.Select(s => s.StatusInformation.Trim()).Where(s => s.Length > 0).Distinct());
        foreach (var element in chain.ChainElements) if (!ReferenceEquals(element.Certificate, certificate)) element.Certificate.Dispose();
        return ok ? null : why.Length > 0 ? why : "its chain does not end at the cluster CA";
    }

    /// <summary>The node's certificate (with its private key) and the CA certificates bundled with it; a bad file or password is a <see cref="ConfigurationException"/>.</summary>
    public static (X509Certificate2 Certificate, X509Certificate2Collection Authorities) Load(SecuritySettings security)
    {
        string path = security.CertificatePath ?? throw new ConfigurationException("vmscatter.security.certificate is not set");
        if (!File.Exists(path)) throw new ConfigurationException($"vmscatter.security.certificate: {path} does not exist");
        X509Certificate2Collection all;
        try { all = X509CertificateLoader.LoadPkcs12CollectionFromFile(path, security.CertificatePassword); }
        catch (CryptographicException e)
        {
            throw new ConfigurationException($"vmscatter.security.certificate: cannot read {path} (wrong vmscatter.security.certificate-password, or not a PKCS#12 file): {e.Message.TrimEnd('.')}");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new ConfigurationException($"vmscatter.security.certificate: cannot read {path}: {e.Message}"); }
        var own = all.Where(c => c.HasPrivateKey).ToArray();
        if (own.Length != 1) throw new ConfigurationException($"vmscatter.security.certificate: {path} must hold exactly one certificate with its private key, it holds {own.Length}");
        var authorities = new X509Certificate2Collection(all.Where(c => !c.HasPrivateKey && IsAuthority(c)).ToArray());
        if (authorities.Count == 0) throw new ConfigurationException($"vmscatter.security.certificate: {path} bundles no CA certificate to check peers against (deploy/make-certs.sh bundles the cluster CA)");
        if (Refusal(own[0], authorities) is { } why) throw new ConfigurationException($"vmscatter.security.certificate: {path}: the node's own certificate {own[0].Subject} is not one its peers accept: {why}");
        return (own[0], authorities);
    }

    private static bool IsAuthority(X509Certificate2 certificate) =>
        certificate.Extensions.OfType<X509BasicConstraintsExtension>().Any(b => b.CertificateAuthority);
}
