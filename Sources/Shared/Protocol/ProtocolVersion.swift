/// The wire protocol's version; a peer speaking another version is refused
/// at hello (see DESIGN.md, Wire protocol). 2: manifests for inputs and
/// outputs too many for a header, refusals with their reason. 3: binary
/// headers for job, done, ack, ready, bye and hello-again. 4: ready and
/// done ask for a number of jobs; several results in one results message.
public enum ProtocolVersion {
    public static let current: UInt8 = 4
}
