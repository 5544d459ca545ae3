using Hyperion;

namespace VMScatter.Cluster.Serialization;

/// <summary>
/// The only types Hyperion may create from bytes off the wire: the protocol's own (VMScatter.*), the collections and
/// primitives its records are made of, and Akka's actor-ref surrogates (by exact name, no other Akka type). Hyperion
/// writes the type of every object into the payload, so without this a peer that reaches the remoting port chooses what gets instantiated here (a
/// deserialization gadget); with it, anything else fails that one message. Generic arguments and array elements are
/// checked too. Every protocol type round-trips through a system set up with this filter (ProtocolRoundTripTests).
/// </summary>
public sealed class ProtocolTypeFilter : ITypeFilter
{
    public static readonly ProtocolTypeFilter Instance = new();

    private static readonly string[] AllowedNamespaces =
    [
        "VMScatter.", "System.Collections.Generic.", "System.Collections.Immutable.", "System.Collections.ObjectModel.", "System.Collections.Frozen.",
    ];

    private static readonly HashSet<string> AllowedSystemTypes =
    [
        "System.String", "System.Boolean", "System.Byte", "System.SByte", "System.Char", "System.Int16", "System.UInt16", "System.Int32", "System.UInt32",
        "System.Int64", "System.UInt64", "System.Single", "System.Double", "System.Decimal", "System.Guid", "System.DateTime", "System.DateTimeOffset",
        "System.TimeSpan", "System.Nullable`1", "System.ValueTuple`2", "System.ValueTuple`3", "System.Tuple`2", "System.Object",
        // Hyperion writes a dictionary as its entries (a key and a value object, each named and checked on its own).
        "System.Collections.DictionaryEntry",
        // Akka's stand-ins for actor refs (a path string each): the refs in messages, and ActorRefs.Nobody.
        "Akka.Actor.ActorRefBase+Surrogate", "Akka.Actor.Nobody+NobodySurrogate",
        // What C# makes of a collection expression given as an IReadOnlyList/IEnumerable (`[vmId]`): read-only wrappers
        // around their elements, in the global namespace of whichever assembly built them; the elements are checked.
        "<>z__ReadOnlySingleElementList`1", "<>z__ReadOnlyArray`1", "<>z__ReadOnlyList`1",
    ];

    /// <param name="typeName">As Hyperion writes it: "Namespace.Type, Assembly" (the core library shortened to a
    /// token), generic arguments in "[[...],[...]]", array ranks in "[]".</param>
    public bool IsAllowed(string typeName)
    {
        int at = 0;
        try { return Type(typeName, ref at); }
        catch (FormatException) { return false; }
    }

    /// <summary>One type at <paramref name="at"/> (its name, generic arguments, array ranks); stops before its assembly part.</summary>
    private static bool Type(string s, ref int at)
    {
        int start = at;
        while (at < s.Length && s[at] is not (',' or '[' or ']')) at++;
        bool allowed = Allowed(s[start..at].Trim());
        while (at < s.Length && s[at] == '[')
        {
            at++;
            if (at < s.Length && s[at] is ']' or ',')
            {
                // An array rank: "[]", "[,]".
                while (at < s.Length && s[at] != ']') at++;
                Expect(s, ref at, ']');
                continue;
            }
            // Generic arguments: "[Arg, Assembly]" each, separated by commas.
            while (true)
            {
                Expect(s, ref at, '[');
                allowed &= Type(s, ref at);
                while (at < s.Length && s[at] != ']') at++; // its assembly
                Expect(s, ref at, ']');
                if (at < s.Length && s[at] == ',') { at++; continue; }
                Expect(s, ref at, ']');
                break;
            }
        }
        return allowed;
    }

    private static void Expect(string s, ref int at, char c)
    {
        if (at >= s.Length || s[at] != c) throw new FormatException($"'{c}' expected at {at} in {s}");
        at++;
    }

    private static bool Allowed(string name) =>
        // A nested type (Outer+Inner) is judged by its outermost type's namespace.
        name.Length > 0 && (AllowedSystemTypes.Contains(name) || AllowedNamespaces.Any(ns => name.StartsWith(ns, StringComparison.Ordinal)));

}
